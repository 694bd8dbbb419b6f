"""The SSE wire format: typed payloads, encoded once per event."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, cast

import orjson

from filters import ChangeEvent

from .payloads import (
    ChangePayload,
    CoalescedPayload,
    PatchOperation,
    ResyncPayload,
    SkippedPayload,
    TooLargePayload,
)

RESYNC = "RESYNC"
"""Control event: the client's copy may have a gap (see ``reason``)."""
SNAPSHOT = "SNAPSHOT"
"""The flow's current filtered state, consistent with the events that follow it."""
# A client cut off for falling behind reconnects with Last-Event-ID and catches up: nothing lost.
RESUMABLE_REASONS = frozenset({"slow-consumer", "shutdown", "token-expired"})


def change_payload(event: ChangeEvent) -> ChangePayload:
    """The JSON object a client receives for a published change."""
    cluster_time = event.cluster_time
    return {
        # A published event has been routed: its event type and flow id are set.
        "type": cast(str, event.event_type),
        "flowId": cast(str, event.flow_id),
        "collection": event.collection,
        "operation": event.operation,
        "documentId": event.document_id,
        "document": None if event.operation == "delete" else event.full_document,
        "patch": None if event.patch is None else cast("list[PatchOperation]", list(event.patch)),
        "clusterTime": None if cluster_time is None else {"t": cluster_time[0], "i": cluster_time[1]},
        "wallTime": event.wall_time,
    }


def coalesced_payload(event: ChangeEvent, count: int) -> CoalescedPayload:
    """Several queued changes of one document as one: its latest state (or its deletion)."""
    payload = change_payload(event)
    # A delete keeps its operation; its patch is already None (only updates have patches).
    operation: Literal["replace", "delete"] = "delete" if event.operation == "delete" else "replace"
    return {**payload, "operation": operation, "patch": None, "coalesced": count}


def collapsed_payload(event: ChangeEvent, skipped: int) -> SkippedPayload:
    """Stands for ``skipped`` log chunks that a slow client did not receive."""
    payload = change_payload(event)
    return {**payload, "operation": "skipped", "documentId": None, "document": None, "patch": None, "skipped": skipped}


def oversize_payload(event: ChangeEvent, size: int) -> TooLargePayload:
    """Stands for an event too large to send: the client refetches the document."""
    payload = change_payload(event)
    return {**payload, "document": None, "patch": None, "tooLarge": True, "size": size}


def frame(
    event_type: str, payload: Mapping[str, Any], *, event_id: str | None = None, retry_ms: int | None = None
) -> bytes:
    """One SSE message. ``data`` is a single line: orjson never emits a raw newline."""
    head = b"event: " + event_type.encode("ascii") + b"\n"
    if event_id:
        head += b"id: " + event_id.encode("ascii") + b"\n"
    if retry_ms is not None:
        head += b"retry: " + str(retry_ms).encode("ascii") + b"\n"
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"


def resync_frame(flow_id: str, reason: str, *, event_id: str | None = None, retry_ms: int | None = None) -> bytes:
    payload: ResyncPayload = {
        "type": "RESYNC",
        "flowId": flow_id,
        "reason": reason,
        "resumable": reason in RESUMABLE_REASONS,
    }
    return frame(RESYNC, payload, event_id=event_id, retry_ms=retry_ms)


def position_frame(event_id: str, *, comment: str = "heartbeat", retry_ms: int | None = None) -> bytes:
    """A comment that also moves the client's last event id (an id-only message dispatches no event)."""
    text = b": " + comment.encode("ascii") + b"\n"
    if retry_ms is not None:
        text += b"retry: " + str(retry_ms).encode("ascii") + b"\n"
    return text + (b"id: " + event_id.encode("ascii") + b"\n\n" if event_id else b"\n")


def comment_frame(text: str) -> bytes:
    return b": " + text.encode("ascii", "replace") + b"\n\n"
