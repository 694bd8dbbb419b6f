"""``to_plain`` on arbitrary nestings of BSON values: always strict JSON, never NaN or Infinity."""

from __future__ import annotations

import datetime
import decimal
import json
import math
import re
import uuid
from typing import Any

import orjson
import pytest
from bson import Binary, Code, DBRef, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.binary import UuidRepresentation
from bson.datetime_ms import DatetimeMS
from bson.son import SON
from hypothesis import example, given, settings
from hypothesis import strategies as st

from changesync.codec import to_plain

INT64 = st.integers(-(2**63), 2**63 - 1)
UINT32 = st.integers(0, 2**32 - 1)
PLAIN_TYPES = (dict, list, str, int, float, bool, type(None))
FIRST_DAY = datetime.datetime(1, 1, 1)
LAST_DAY = datetime.datetime(9999, 12, 31, 23, 59, 59, 999999)
# Milliseconds since the epoch of 0001-01-01 and of 10000-01-01.
FIRST_MS = -62_135_596_800_000
END_MS = 253_402_300_800_000


def _decimal128(value: decimal.Decimal) -> Decimal128:
    """``value`` as a Decimal128, rounded into its 34 digits and exponent range when it does not fit."""
    try:
        return Decimal128(value)
    except (ArithmeticError, ValueError):
        pass
    rounding = decimal.Context(prec=34, Emax=6144, Emin=-6143, clamp=1, traps=[])
    try:
        return Decimal128(rounding.create_decimal(value))
    except (ArithmeticError, ValueError):
        return Decimal128("NaN")


def _aware(moment: datetime.datetime, minutes: int) -> datetime.datetime:
    """``moment`` (UTC) seen from a fixed offset; kept in years 2-9998 so that both sides exist."""
    return moment.replace(tzinfo=datetime.UTC).astimezone(datetime.timezone(datetime.timedelta(minutes=minutes)))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


DECIMALS = st.one_of(
    st.sampled_from(["NaN", "-NaN", "sNaN", "Infinity", "-Infinity", "0", "-0", "1.10", "1E+6144", "-1E-6176"]).map(
        Decimal128
    ),
    st.decimals(allow_nan=True, allow_infinity=True).map(_decimal128),
)


def scalars(dates_ms: st.SearchStrategy[DatetimeMS]) -> st.SearchStrategy[Any]:
    """Every BSON scalar PyMongo can hold; ``dates_ms`` for dates decoded as ``DatetimeMS``."""
    return st.one_of(
        st.none(),
        st.booleans(),
        st.text(),
        INT64,
        INT64.map(Int64),
        st.floats(allow_nan=True, allow_infinity=True),
        st.binary(min_size=12, max_size=12).map(ObjectId),
        st.datetimes(min_value=FIRST_DAY, max_value=LAST_DAY),
        st.builds(
            _aware,
            st.datetimes(min_value=datetime.datetime(2, 1, 1), max_value=datetime.datetime(9998, 12, 31)),
            st.integers(-23 * 60, 23 * 60),
        ),
        dates_ms,
        DECIMALS,
        st.binary(max_size=40),
        st.builds(Binary, st.binary(max_size=40), st.integers(0, 255)),
        st.uuids().map(Binary.from_uuid),
        st.uuids().map(lambda value: Binary.from_uuid(value, UuidRepresentation.PYTHON_LEGACY)),
        st.uuids(),
        st.builds(Regex, st.text(), st.text(alphabet="ilmsux", max_size=6)),
        st.builds(Regex, st.text(), st.integers(0, 1023)),
        st.text(max_size=10).map(lambda text: re.compile(re.escape(text), re.IGNORECASE | re.MULTILINE)),
        st.builds(Timestamp, UINT32, UINT32),
        st.builds(Code, st.text()),
        st.builds(Code, st.text(), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)),
        st.just(MinKey()),
        st.just(MaxKey()),
    )


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keys = st.text(max_size=12)  # any name: dots, "$", "/", "~", empty
    return st.one_of(
        st.lists(children, max_size=6),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(keys, children, max_size=6),
        st.lists(st.tuples(keys, children), max_size=4).map(SON),
        st.builds(DBRef, st.text(min_size=1, max_size=10), children, st.none() | st.text(min_size=1, max_size=10)),
    )


BSON_VALUES = st.recursive(scalars(INT64.map(DatetimeMS)), _containers, max_leaves=40)
# Dates out of the ISO range map to integer milliseconds, kept as numbers even beyond ±2^53 (test_codec.py
# pins DatetimeMS(-2**62) -> -2**62); within ±2^53 ms every mapped value is also a fixed point.
JS_SAFE_BSON_VALUES = st.recursive(scalars(st.integers(-(2**53), 2**53).map(DatetimeMS)), _containers, max_leaves=40)


def walk(value: Any) -> Any:
    """Every value inside ``value``, ``value`` included."""
    yield value
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


class TestToPlainOnAnything:
    @settings(max_examples=400, deadline=None)
    @given(BSON_VALUES)
    def test_strict_json(self, value):
        """Whatever the nesting of BSON values, the result encodes with orjson and parses back as strict JSON."""
        plain = to_plain(value)
        encoded = orjson.dumps(plain)
        assert json.loads(encoded, parse_constant=_reject_constant) == plain

    @settings(max_examples=400, deadline=None)
    @given(BSON_VALUES)
    def test_no_nan_or_infinity(self, value):
        """No float NaN or infinity survives, at any depth."""
        for item in walk(to_plain(value)):
            if isinstance(item, float):
                assert math.isfinite(item)

    @settings(max_examples=400, deadline=None)
    @given(BSON_VALUES)
    @example(Int64(5))
    def test_only_plain_types(self, value):
        """The result holds only the exact JSON types (no ``Int64``, ``SON`` or other subclasses), string keys.

        The filters compare exact types: ``RouteStage`` accepts a flow id only if ``type(value) is int``
        (or ``str``), and ``diff`` reports ``Int64(5)`` -> ``5`` as a change.
        """
        for item in walk(to_plain(value)):
            assert type(item) in PLAIN_TYPES, f"{type(item).__name__} {item!r}"

    @settings(max_examples=200, deadline=None)
    @given(JS_SAFE_BSON_VALUES)
    def test_plain_values_are_a_fixed_point(self, value):
        """Converting the result again changes nothing: the mapping is applied exactly once."""
        plain = to_plain(value)
        assert to_plain(plain) == plain

    @settings(max_examples=200, deadline=None)
    @given(st.one_of(INT64, INT64.map(Int64)))
    def test_integers_safe_for_javascript(self, value):
        """Integers within ±2^53 stay numbers; beyond, they become their decimal string."""
        plain = to_plain(value)
        if abs(value) <= 2**53:
            assert plain == value and isinstance(plain, int)
        else:
            assert plain == str(value)

    @settings(max_examples=200, deadline=None)
    @given(st.one_of(INT64.map(DatetimeMS), st.datetimes(min_value=FIRST_DAY, max_value=LAST_DAY)))
    def test_dates(self, value):
        """Dates in years 1-9999 become ISO-8601 UTC with milliseconds; others integer milliseconds."""
        plain = to_plain(value)
        moment = value.as_datetime() if isinstance(value, DatetimeMS) and FIRST_MS <= int(value) < END_MS else value
        if isinstance(moment, datetime.datetime):
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", plain)
            assert plain[:23] == moment.isoformat(timespec="milliseconds")[:23]
        else:
            assert plain == int(value)


class TestHostileShapes:
    def test_mongodb_depth(self):
        """A document at MongoDB's nesting limit (100 levels) converts and encodes."""
        value: Any = {"leaf": [Decimal128("NaN"), float("inf")]}
        for _ in range(98):
            value = {"n": value}
        plain = to_plain(value)
        assert b"NaN" in orjson.dumps(plain)
        assert "Infinity" in json.dumps(plain)

    def test_huge_array(self):
        """A 100,000-element array of mixed BSON values converts in one piece."""
        value = [Int64(2**60), float("nan"), ObjectId(b"123456789012"), MinKey()] * 25_000
        plain = to_plain(value)
        assert len(plain) == 100_000
        assert plain[:4] == ["1152921504606846976", "NaN", ObjectId(b"123456789012").__str__(), {"$minKey": 1}]

    @pytest.mark.parametrize("key", ["a.b", "$x", "", "a/b", "m~n", "0", "_id", "\u2028", "\x01"])
    def test_keys_kept(self, key):
        """Field names pass unchanged, whatever their characters."""
        assert to_plain({key: {key: Int64(1)}}) == {key: {key: 1}}

    def test_uuid_subtype_4_of_wrong_length(self):
        """A subtype-4 Binary that is not 16 bytes is not a UUID: it becomes base64."""
        assert to_plain(Binary(b"abc", 4)) == "YWJj"

    def test_uuid_object(self):
        """A ``uuid.UUID`` (decoded with a UUID representation) becomes its canonical string."""
        value = uuid.UUID("0f8fad5b-d9cb-469f-a165-70867728950e")
        assert to_plain(value) == str(value)
