"""BSON values → plain JSON values, and raw change events → ``filters.ChangeEvent``.

The one mapping, documented in the README:

==========================  ==========================================================
BSON                        JSON
==========================  ==========================================================
ObjectId                    24-character hex string
Date                        ISO-8601 UTC string with milliseconds (``…T12:00:00.000Z``);
                            dates outside years 1-9999: integer milliseconds since epoch
Decimal128                  string (``"1.10"``, ``"NaN"``)
Int64 / int                 number within ±2^53, else string
Double NaN / ±Infinity      string ``"NaN"``, ``"Infinity"``, ``"-Infinity"``
Binary (UUID subtype 4)     canonical UUID string
Binary (other subtypes)     base64 string
Regex                       ``{"$regex": pattern, "$options": flags}``
Timestamp                   ``{"t": seconds, "i": increment}``
Code / CodeWithScope        the code as a string
MinKey / MaxKey             ``{"$minKey": 1}`` / ``{"$maxKey": 1}``
DBRef                       ``{"$ref": collection, "$id": id}``
==========================  ==========================================================
"""

from __future__ import annotations

import base64
import datetime
import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import bson
from bson import Binary, Code, DBRef, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.datetime_ms import DatetimeMS
from bson.errors import InvalidBSON

from filters import ChangeEvent, UpdateDescription

from .queries import DATA_OPERATIONS

# JavaScript numbers are exact up to 2^53; larger integers would silently lose digits in a browser.
MAX_SAFE_INTEGER = 2**53
UTC = datetime.UTC


def _datetime(value: datetime.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="milliseconds") + "Z"


def _datetime_ms(value: DatetimeMS) -> Any:
    try:
        return _datetime(value.as_datetime())
    except (OverflowError, ValueError, OSError, InvalidBSON):
        return int(value)


def _int(value: int) -> int | str:
    return int(value) if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else str(value)


def _float(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _binary(value: bytes) -> str:
    if isinstance(value, Binary) and value.subtype == 4 and len(value) == 16:
        return str(uuid.UUID(bytes=bytes(value)))
    return base64.b64encode(bytes(value)).decode("ascii")


def _regex(value: Regex[Any] | re.Pattern[Any]) -> dict[str, str]:
    regex = value if isinstance(value, Regex) else Regex.from_native(value)
    flags = regex.flags if isinstance(regex.flags, str) else _regex_flags(regex.flags)
    pattern = regex.pattern if isinstance(regex.pattern, str) else regex.pattern.decode("utf-8", "replace")
    return {"$regex": pattern, "$options": flags}


def _regex_flags(flags: int) -> str:
    letters = {re.IGNORECASE: "i", re.LOCALE: "l", re.MULTILINE: "m", re.DOTALL: "s", re.UNICODE: "u", re.VERBOSE: "x"}
    return "".join(letter for bit, letter in letters.items() if flags & bit)


CONVERTERS: dict[type, Callable[[Any], Any]] = {
    ObjectId: str,
    datetime.datetime: _datetime,
    DatetimeMS: _datetime_ms,
    Decimal128: str,
    Int64: _int,
    int: _int,
    float: _float,
    Binary: _binary,
    bytes: _binary,
    uuid.UUID: str,
    Regex: _regex,
    re.Pattern: _regex,
    Timestamp: lambda value: {"t": value.time, "i": value.inc},
    Code: str,
    str: str,
    MinKey: lambda _: {"$minKey": 1},
    MaxKey: lambda _: {"$maxKey": 1},
    DBRef: lambda value: {"$ref": value.collection, "$id": to_plain(value.id)},
}
PASS_THROUGH = frozenset({str, bool, type(None)})


def to_plain(value: Any) -> Any:
    """Convert one decoded BSON value (and everything inside it) to plain JSON values."""
    kind = type(value)
    if kind is dict:
        return _plain_dict(value)
    if kind is list:
        return _plain_list(value)
    if kind in PASS_THROUGH:
        return value
    if isinstance(value, Mapping):
        return {str(key): to_plain(item) for key, item in value.items()}
    if kind is tuple:
        return [to_plain(item) for item in value]
    converter = CONVERTERS.get(kind)
    if converter is None:
        # Subclasses (Code is a str, Int64 an int, SON a dict): the most specific match wins.
        for base in kind.__mro__[1:]:
            converter = CONVERTERS.get(base)
            if converter is not None:
                break
        else:
            return str(value)
    return converter(value)


# The hot path: documents are mostly dicts, lists, strings and small numbers. Those are handled
# inline; a call to ``to_plain`` is made only for the values that need converting.


def _plain_dict(document: dict[str, Any]) -> dict[str, Any]:
    plain: dict[str, Any] = {}
    for key, value in document.items():
        kind = type(value)
        if kind is str or kind is bool or value is None:
            plain[key] = value
        elif kind is int:
            plain[key] = value if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else str(value)
        elif kind is float:
            plain[key] = value if value - value == 0 else _float(value)  # only NaN and ±inf fail this
        elif kind is dict:
            plain[key] = _plain_dict(value)
        elif kind is list:
            plain[key] = _plain_list(value)
        else:
            plain[key] = to_plain(value)
    return plain


def _plain_list(array: list[Any]) -> list[Any]:
    plain: list[Any] = []
    append = plain.append
    for value in array:
        kind = type(value)
        if kind is str or kind is bool or value is None:
            append(value)
        elif kind is int:
            append(value if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else str(value))
        elif kind is float:
            append(value if value - value == 0 else _float(value))
        elif kind is dict:
            append(_plain_dict(value))
        elif kind is list:
            append(_plain_list(value))
        else:
            append(to_plain(value))
    return plain


# --- change events ---------------------------------------------------------------------------

_MISSING: Any = object()


def routable_flow_id(value: Any) -> bool:
    """A flow id is a string, an integer or an ObjectId, judged on the BSON value: converted, a NaN,
    a date or a Decimal128 would look like a string and route to a made-up flow."""
    # Code is a str subclass, bool an int subclass: neither names a flow.
    return type(value) is str or isinstance(value, ObjectId) or (isinstance(value, int) and not isinstance(value, bool))


def _without_bad_flow_id(plain: dict[str, Any], raw: Mapping[str, Any], path: Sequence[str]) -> dict[str, Any]:
    """``plain`` with the flow id set to null (which no route accepts) when its BSON type is wrong."""
    raw_value: Any = raw
    for part in path:
        raw_value = raw_value.get(part, _MISSING) if isinstance(raw_value, Mapping) else _MISSING
        if raw_value is _MISSING:
            return plain
    if routable_flow_id(raw_value):
        return plain
    copy = dict(plain)
    node = copy
    for part in path[:-1]:
        node[part] = dict(node[part])
        node = node[part]
    node[path[-1]] = None
    return copy


def to_change_event(
    raw: Mapping[str, Any], *, flow_id_path: Sequence[str] | None = None, before: dict[str, Any] | None = None
) -> ChangeEvent:
    """Convert a raw data change event (insert/update/replace/delete) for the filter pipeline.

    With ``flow_id_path``, a flow id of a type that cannot name a flow becomes null (unroutable).
    ``before``, when the event has a pre-image, is that pre-image already converted: the caller
    vouches that it is the document's state before this change.
    """
    operation = raw["operationType"]
    if operation not in DATA_OPERATIONS:
        raise ValueError(f"not a data change: {operation!r}")
    document_key = to_plain(raw.get("documentKey") or {})
    description = raw.get("updateDescription")
    cluster_time = raw.get("clusterTime")
    wall_time = raw.get("wallTime")
    return ChangeEvent(
        collection=raw["ns"]["coll"],
        operation=operation,
        document_id=document_key.get("_id"),
        document_key=document_key,
        full_document=_document(raw.get("fullDocument"), flow_id_path),
        full_document_before_change=(
            before
            if before is not None and raw.get("fullDocumentBeforeChange") is not None
            else _document(raw.get("fullDocumentBeforeChange"), flow_id_path)
        ),
        update_description=None if description is None else _update_description(description, flow_id_path),
        cluster_time=(cluster_time.time, cluster_time.inc) if isinstance(cluster_time, Timestamp) else None,
        wall_time=to_plain(wall_time) if wall_time is not None else None,
    )


def _document(value: Any, flow_id_path: Sequence[str] | None) -> dict[str, Any] | None:
    if not isinstance(value, Mapping):
        return None
    plain: dict[str, Any] = to_plain(value)
    return plain if flow_id_path is None else _without_bad_flow_id(plain, value, flow_id_path)


def _update_description(description: Mapping[str, Any], flow_id_path: Sequence[str] | None) -> UpdateDescription:
    raw_fields = description.get("updatedFields") or {}
    updated_fields: dict[str, Any] = to_plain(raw_fields)
    if flow_id_path is not None:
        # The flow id may be set by its own key or with a parent ("meta" for "meta.flowId").
        for depth in range(1, len(flow_id_path) + 1):
            key = ".".join(flow_id_path[:depth])
            if key in raw_fields:
                updated_fields = _without_bad_flow_id(updated_fields, raw_fields, [key, *flow_id_path[depth:]])
    return UpdateDescription(
        updated_fields=updated_fields,
        removed_fields=tuple(description.get("removedFields") or ()),
        truncated_arrays=tuple(
            (entry["field"], int(entry["newSize"])) for entry in description.get("truncatedArrays") or ()
        ),
        disambiguated_paths={
            path: tuple(components) for path, components in (description.get("disambiguatedPaths") or {}).items()
        },
    )


def cluster_time_of(change: Mapping[str, Any]) -> tuple[int, int] | None:
    """A raw change's ``clusterTime`` as ``(seconds, increment)``; ``None`` when it has none."""
    stamp = change.get("clusterTime")
    return (stamp.time, stamp.inc) if isinstance(stamp, Timestamp) else None


def identity_key(document_key: Any) -> bytes | None:
    """A document's exact identity: its ``documentKey`` (``_id`` plus any shard key) as BSON, so that
    ids that convert alike (``ObjectId("…")`` and ``"…"``, ``True`` and ``1``) stay apart. ``None``
    when the event has no usable ``documentKey``."""
    if not isinstance(document_key, Mapping) or "_id" not in document_key:
        return None
    try:
        return bson.encode(document_key)
    except Exception:
        return None


# --- resume tokens as SSE ids ----------------------------------------------------------------

# An id starts with its format: hex tokens (the usual ``{_data: "<hex>"}``) travel as their bytes,
# half the length of the hex; anything else (``_typeBits``, other fields) as its whole BSON.
UPPER_HEX, LOWER_HEX, WHOLE_BSON = "H", "h", "b"


def encode_token(token: Mapping[str, Any]) -> str:
    """The resume token as an SSE ``id:``, lossless (``_typeBits`` and hex case included)."""
    data = token.get("_data")
    # isalnum() keeps out the spaces that fromhex() would skip; fromhex() then refuses other letters.
    if len(token) == 1 and isinstance(data, str) and data and len(data) % 2 == 0 and data.isascii() and data.isalnum():
        try:
            raw = bytes.fromhex(data)
        except ValueError:
            raw = b""
        if raw and data == data.upper():
            return UPPER_HEX + _b64(raw)
        if raw and data == data.lower():
            return LOWER_HEX + _b64(raw)
    return WHOLE_BSON + _b64(bson.encode(token))


def decode_token(cursor: str) -> dict[str, Any]:
    """Inverse of ``encode_token``; raises ``ValueError`` for anything that is not one of ours."""
    kind, body = cursor[:1], cursor[1:]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        if kind in (UPPER_HEX, LOWER_HEX) and raw:
            text = raw.hex()
            return {"_data": text.upper() if kind == UPPER_HEX else text}
        if kind == WHOLE_BSON:
            token = bson.decode(raw)
            if isinstance(token.get("_data"), str):
                return token
    except Exception as exc:
        raise ValueError("not a changesync event id") from exc
    raise ValueError("not a changesync event id")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# --- event ids -------------------------------------------------------------------------------

# An id the hub hands out is "<position>~<epoch>.<seq>": the oplog position it follows (an encoded
# resume token), and its place in the hub's history (the hub's epoch and sequence number). An id
# without "~" is an oplog position only: frames of a catch-up carry those.
HUB_SEPARATOR, SEQ_SEPARATOR = "~", "."


@dataclass(frozen=True, slots=True)
class EventId:
    position: str
    """The encoded resume token: where a catch-up from the oplog starts."""
    epoch: str | None = None
    seq: int | None = None

    def __str__(self) -> str:
        if self.epoch is None or self.seq is None:
            return self.position
        return f"{self.position}{HUB_SEPARATOR}{self.epoch}{SEQ_SEPARATOR}{self.seq}"


def event_id(position: str, epoch: str, seq: int) -> str:
    return f"{position}{HUB_SEPARATOR}{epoch}{SEQ_SEPARATOR}{seq}"


def parse_event_id(text: str) -> EventId:
    """The parts of an id; raises ``ValueError`` for anything that is not one of ours."""
    position, separator, place = text.partition(HUB_SEPARATOR)
    decode_token(position)
    if not separator:
        return EventId(position)
    epoch, _, seq = place.rpartition(SEQ_SEPARATOR)
    if not epoch or not seq.isdigit() or len(seq) > 18:
        raise ValueError("not a changesync event id")
    return EventId(position, epoch, int(seq))
