import datetime
import math
import re
import uuid

import bson
import pytest
from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.datetime_ms import DatetimeMS

from changesync.codec import decode_token, encode_token, to_change_event, to_plain


class TestToPlain:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (ObjectId("6b086caea4575a1bc27dcdf6"), "6b086caea4575a1bc27dcdf6"),
            (datetime.datetime(2026, 11, 26, 12, 0, 0, 5000), "2026-11-26T12:00:00.005Z"),
            (
                datetime.datetime(2026, 11, 26, 13, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=1))),
                "2026-11-26T12:00:00.000Z",
            ),
            (DatetimeMS(-(2**62)), -(2**62)),
            (Decimal128("1.10"), "1.10"),
            (Decimal128("NaN"), "NaN"),
            (Int64(2**53), 2**53),
            (Int64(2**53 + 1), str(2**53 + 1)),
            (-(2**63), str(-(2**63))),
            (float("nan"), "NaN"),
            (float("inf"), "Infinity"),
            (float("-inf"), "-Infinity"),
            (1.5, 1.5),
            (Binary(b"\x00\x01", 0), "AAE="),
            (b"\xff", "/w=="),
            (Binary(uuid.UUID(int=1).bytes, 4), "00000000-0000-0000-0000-000000000001"),
            (Binary(uuid.UUID(int=1).bytes, 3), "AAAAAAAAAAAAAAAAAAAAAQ=="),
            (Regex("^a.b", "im"), {"$regex": "^a.b", "$options": "im"}),
            (re.compile("x", re.IGNORECASE), {"$regex": "x", "$options": "iu"}),
            (Timestamp(1700000000, 3), {"t": 1700000000, "i": 3}),
            (Code("function () {}"), "function () {}"),
            (Code("f()", {"a": 1}), "f()"),
            (MinKey(), {"$minKey": 1}),
            (MaxKey(), {"$maxKey": 1}),
            (
                bson.DBRef("coll", ObjectId("6b086caea4575a1bc27dcdf6")),
                {"$ref": "coll", "$id": "6b086caea4575a1bc27dcdf6"},
            ),
            (True, True),
            (None, None),
        ],
    )
    def test_mapping(self, value, expected):
        """Each BSON type maps to the documented JSON value."""
        assert to_plain(value) == expected

    def test_nested_and_key_order(self):
        """Nested documents and arrays are converted deeply, keys keep their order."""
        value = {"b": [ObjectId("6b086caea4575a1bc27dcdf6"), {"z": Int64(1), "a": None}], "a.b": 1, "$k": 2}
        plain = to_plain(value)
        assert plain == {"b": ["6b086caea4575a1bc27dcdf6", {"z": 1, "a": None}], "a.b": 1, "$k": 2}
        assert list(plain) == ["b", "a.b", "$k"]

    def test_deep_nesting(self):
        """A 100-level document converts without hitting recursion limits."""
        value: dict = {}
        inner = value
        for _ in range(100):
            inner["x"] = {}
            inner = inner["x"]
        depth, node = 0, to_plain(value)
        while node:
            node, depth = node["x"], depth + 1
        assert depth == 100

    def test_result_is_json_finite(self):
        """No converted float is NaN or infinite."""
        plain = to_plain({"values": [float("nan"), 1e308 * 10, Decimal128("Infinity")]})
        assert all(not isinstance(v, float) or math.isfinite(v) for v in plain["values"])


class TestChangeEvent:
    def test_update_event(self):
        """An update event keeps its description, images and times."""
        raw = {
            "_id": {"_data": "82"},
            "operationType": "update",
            "clusterTime": Timestamp(1795714224, 9),
            "wallTime": datetime.datetime(2026, 11, 26, 17, 30, 24, 76000),
            "ns": {"db": "d", "coll": "flowboards"},
            "documentKey": {"_id": ObjectId("6b086caea4575a1bc27dcdf6")},
            "updateDescription": {
                "updatedFields": {"nodes.1": {"at": datetime.datetime(2026, 1, 1)}},
                "removedFields": ["old"],
                "truncatedArrays": [{"field": "edges", "newSize": 2}],
                "disambiguatedPaths": {"a.0": ["a", "0"]},
            },
            "fullDocumentBeforeChange": None,
        }
        event = to_change_event(raw)
        assert event.collection == "flowboards"
        assert event.document_id == "6b086caea4575a1bc27dcdf6"
        assert event.cluster_time == (1795714224, 9)
        assert event.wall_time == "2026-11-26T17:30:24.076Z"
        assert event.full_document_before_change is None
        description = event.update_description
        assert description is not None
        assert description.updated_fields == {"nodes.1": {"at": "2026-01-01T00:00:00.000Z"}}
        assert description.removed_fields == ("old",)
        assert description.truncated_arrays == (("edges", 2),)
        assert description.disambiguated_paths == {"a.0": ("a", "0")}

    @pytest.mark.parametrize(
        ("updated", "expected"),
        [
            ({"meta.flowId": Decimal128("1.5")}, {"meta.flowId": None}),
            ({"meta": {"flowId": Decimal128("1.5"), "x": 1}}, {"meta": {"flowId": None, "x": 1}}),
            ({"meta": {"flowId": "f1"}}, {"meta": {"flowId": "f1"}}),
            (
                {"meta": {"flowId": ObjectId("6b086caea4575a1bc27dcdf6")}},
                {"meta": {"flowId": "6b086caea4575a1bc27dcdf6"}},
            ),
        ],
    )
    def test_flow_id_of_the_wrong_type_set_by_key_or_parent(self, updated, expected):
        """A flow id that cannot name a flow becomes null whether the update sets it or its parent."""
        raw = {
            "operationType": "update",
            "ns": {"db": "d", "coll": "c"},
            "documentKey": {"_id": 1},
            "updateDescription": {"updatedFields": updated, "removedFields": []},
        }
        event = to_change_event(raw, flow_id_path=("meta", "flowId"))
        assert event.update_description is not None
        assert event.update_description.updated_fields == expected

    def test_rejects_non_data_events(self):
        """DDL events are not data changes."""
        with pytest.raises(ValueError, match="not a data change"):
            to_change_event({"operationType": "drop", "ns": {"db": "d", "coll": "c"}})


class TestTokens:
    @pytest.mark.parametrize(
        "token",
        [
            {"_data": "8267C867A2000000192B042C0100296E5A1004"},
            {"_data": "370000001073000300000011740008000000b06c086b"},
            {"_data": "82aB"},
            {"_data": "8", "extra": 1},
            {"_data": "82642AD66B000000012B022C0100296E5A10045DC4B11B", "_typeBits": Binary(b"\x40", 0)},
        ],
    )
    def test_round_trip(self, token):
        """A token survives the trip through an SSE id unchanged, _typeBits and key order included."""
        cursor = encode_token(token)
        assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor)
        decoded = decode_token(cursor)
        assert bson.encode(decoded) == bson.encode(token)

    def test_hex_tokens_are_compact(self):
        """A plain hex token costs about as many characters as its hex, not more."""
        data = "8267C867A2000000192B042C0100296E5A1004D3284E04D8914467A2160201812E4C4C463C6F70"
        assert len(encode_token({"_data": data})) < len(data)

    @pytest.mark.parametrize("cursor", ["", "!!!", "abc", "H", "b" + "A" * 8, encode_token({"x": 1}), "Z" + "AAAA"])
    def test_foreign_ids_are_rejected(self, cursor):
        """Anything that is not one of our ids raises ValueError."""
        with pytest.raises(ValueError, match="not a changesync event id"):
            decode_token(cursor)
