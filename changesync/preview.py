"""``changesync preview``: what clients would receive for captured change events, offline.

Input: one change event per line in MongoDB Extended JSON (as ``mongosh`` prints with
``EJSON.stringify``). Output: for each line, the SSE message, or ``dropped: <reason>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from bson import json_util
from bson.errors import InvalidBSON

from filters import Drop, Pipeline

from .codec import encode_token, to_change_event
from .producing.encode import encode
from .queries import DATA_OPERATIONS, RESET_OPERATIONS


def preview_lines(lines: Iterable[str], pipeline: Pipeline, *, max_event_bytes: int) -> Iterator[tuple[int, str, bool]]:
    """Yield ``(line number, text, is_error)`` for every non-blank input line."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            change: Any = json_util.loads(line)
        except (ValueError, TypeError, InvalidBSON) as exc:
            yield number, f"line {number}: not Extended JSON ({exc})", True
            continue
        if not isinstance(change, dict):
            yield number, f"line {number}: expected a change event object", True
            continue
        operation = change.get("operationType")
        if not isinstance(operation, str) or "_id" not in change:
            yield number, f"line {number}: not a change event (one has an operationType and an _id)", True
            continue
        if operation in RESET_OPERATIONS:
            yield number, f"resync: every client of this database must reload ({operation})", False
            continue
        if operation not in DATA_OPERATIONS:
            yield number, f"dropped: not-watched (operationType {operation!r})", False
            continue
        try:
            route = pipeline.routes.get(str((change.get("ns") or {}).get("coll")))
            event = to_change_event(change, flow_id_path=None if route is None else route.flow_id_path.split("."))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            yield number, f"line {number}: malformed change event ({type(exc).__name__}: {exc})", True
            continue
        result = pipeline.process_all(event)
        if isinstance(result, Drop):
            detail = f" ({result.detail})" if result.detail else ""
            yield number, f"dropped: {result.reason}{detail}", False
            continue
        token = change.get("_id")
        position = encode_token(token) if isinstance(token, dict) and token.get("_data") else ""
        encoded = encode(result, max_event_bytes=max_event_bytes)
        for draft in encoded.drafts:
            yield number, draft.framed(position).data.decode().rstrip("\n"), False
        for error in encoded.errors:
            yield number, f"line {number}: cannot be encoded ({error})", True
