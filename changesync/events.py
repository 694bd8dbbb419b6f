"""The SSE wire format: typed payloads, encoded once per event."""

from __future__ import annotations

from typing import Any

import orjson

from filters import ChangeEvent

RESYNC = "RESYNC"
"""Control event: the client's view may have a gap; it must reload the flow's state."""


def change_payload(event: ChangeEvent) -> dict[str, Any]:
    """The JSON object a client receives for a published change."""
    cluster_time = event.cluster_time
    return {
        "type": event.event_type,
        "flowId": event.flow_id,
        "collection": event.collection,
        "operation": event.operation,
        "documentId": event.document_id,
        "document": None if event.operation == "delete" else event.full_document,
        "patch": None if event.patch is None else list(event.patch),
        "clusterTime": None if cluster_time is None else {"t": cluster_time[0], "i": cluster_time[1]},
        "wallTime": event.wall_time,
    }


def frame(
    event_type: str, payload: dict[str, Any], *, event_id: str | None = None, retry_ms: int | None = None
) -> bytes:
    """One SSE message. ``data`` is a single line: orjson never emits a raw newline."""
    head = b"event: " + event_type.encode("ascii") + b"\n"
    if event_id is not None:
        head += b"id: " + event_id.encode("ascii") + b"\n"
    if retry_ms is not None:
        head += b"retry: " + str(retry_ms).encode("ascii") + b"\n"
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"


def resync_frame(flow_id: str, reason: str, *, retry_ms: int | None = None) -> bytes:
    return frame(RESYNC, {"type": RESYNC, "flowId": flow_id, "reason": reason}, retry_ms=retry_ms)


def comment_frame(text: str) -> bytes:
    return b": " + text.encode("ascii", "replace") + b"\n\n"
