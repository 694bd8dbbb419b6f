"""The SSE wire format: ``Draft`` and ``Frame``, the encoded messages that the hub carries.

A change is encoded once, into one ``Draft`` per flow it concerns: its JSON payload and the little
that delivery needs to know about it (which document it is about). The hub gives each draft its id
and makes it a ``Frame``, whose bytes then go to every subscriber of that flow. Both are plain
values, so that they can travel between processes as they are.

An update that has a patch is encoded twice, once per way of receiving updates (``?updates=``):
in full (``document`` and ``patch``) and patch-only (``document: null``, ``patch``, ``patchOnly``).
Both variants are made here, once per event; a subscriber only picks one of the two ready-made
byte strings (``Frame.patch_data``). Every other frame has one variant, the same for everyone.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import orjson

from filters import ChangeEvent

from .payloads import (
    ChangePayload,
    CoalescedPayload,
    PatchOnlyPayload,
    PatchOperation,
    ResyncPayload,
    SkippedPayload,
    TooLargePayload,
)
from .resync import RESUMABLE_REASONS

RESYNC = "RESYNC"
"""Control event: the client's copy may have a gap (see ``changesync.resync``)."""
SNAPSHOT = "SNAPSHOT"
"""The flow's current filtered state, consistent with the events that follow it."""
FLOW_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:~-]{1,256}")
FLOW_ID_RULE = "1-256 characters of A-Z a-z 0-9 _ . : ~ -"
"""What a flow id is (in a URL, an SSE frame or a Redis key), in words for error messages."""
_DATA_LINE = b"\ndata: "
_ID_PREFIX = b"id: "


@dataclass(frozen=True, slots=True)
class Frame:
    """One encoded SSE message for one flow.

    ``event_type`` is empty for comments (heartbeats); ``position`` is the id the message carries
    (empty when it has none). Data frames name the change's ``collection``, ``operation`` and
    ``document_key`` (the JSON of the document's id), which overflow shedding and snapshot folding
    read; control frames (``RESYNC``, heartbeats) leave them empty.
    """

    flow_id: str
    event_type: str
    data: bytes
    position: str = ""
    collection: str = ""
    operation: str = ""
    document_key: str = ""
    seq: int = 0
    """The hub's sequence number of the change (0: not from a hub's history, e.g. a catch-up)."""
    prev_seq: int = 0
    """The sequence number of the flow's previous frame, or an upper bound of it."""
    patch_data: bytes = b""
    """The message for patch-only subscribers (``document: null``); empty: the same as ``data``."""

    @property
    def token(self) -> str:
        """The oplog position of the id (without the hub's part)."""
        return self.position.partition("~")[0]

    @property
    def is_change(self) -> bool:
        return bool(self.collection)

    def payload(self) -> dict[str, Any]:
        """The message's ``data:`` object, decoded (for the rare paths that need it)."""
        start = self.data.index(_DATA_LINE) + len(_DATA_LINE)
        payload: dict[str, Any] = orjson.loads(self.data[start:].rstrip(b"\n"))
        return payload

    def without_id(self) -> bytes:
        """The message without its ``id:`` line: delivered, but without moving the client's last event id."""
        head, _, body = self.data.partition(_DATA_LINE)
        lines = [line for line in head.split(b"\n") if not line.startswith(_ID_PREFIX)]
        return b"\n".join(lines) + _DATA_LINE + body


@dataclass(frozen=True, slots=True)
class Draft:
    """An encoded change for one flow, before the hub gives it its id."""

    flow_id: str
    event_type: str
    payload: bytes
    """The ``data:`` JSON."""
    collection: str
    operation: str
    document_key: str
    patch_payload: bytes = b""
    """The patch-only ``data:`` JSON of an update that has a patch; empty: ``payload`` for everyone."""

    def framed(self, event_id: str, *, seq: int = 0, prev_seq: int = 0) -> Frame:
        head = b"event: " + self.event_type.encode("ascii") + b"\n"
        if event_id:
            head += b"id: " + event_id.encode("ascii") + b"\n"
        head += b"data: "
        # join() copies the (large) payload once; ``+`` would copy it twice.
        patch_data = b"".join((head, self.patch_payload, b"\n\n")) if self.patch_payload else b""
        return Frame(
            self.flow_id,
            self.event_type,
            b"".join((head, self.payload, b"\n\n")),
            event_id,
            self.collection,
            self.operation,
            self.document_key,
            seq,
            prev_seq,
            patch_data,
        )


# What an SSE message adds to its payload at most: "event: <type>", "id: <id>", "data: " lines.
MESSAGE_OVERHEAD_BYTES = 512


def document_key(document_id: Any) -> str:
    """The key that identifies a document within its collection in frames and snapshots."""
    return orjson.dumps(document_id, option=orjson.OPT_SORT_KEYS).decode()


def change_payload(event: ChangeEvent) -> ChangePayload:
    """The JSON object a client receives for a published change."""
    cluster_time = event.cluster_time
    payload: ChangePayload = {
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
    if event.origin is not None:
        payload["origin"] = event.origin
    return payload


def oversize_payload(payload: Mapping[str, Any], size: int) -> TooLargePayload:
    """Stands for an event too large to send: the client refetches the document."""
    return cast(TooLargePayload, {**payload, "document": None, "patch": None, "tooLarge": True, "size": size})


def patch_only_payload(payload: ChangePayload) -> PatchOnlyPayload:
    """An update with a patch as patch-only subscribers receive it: the patch without the document."""
    return cast(PatchOnlyPayload, {**payload, "document": None, "patchOnly": True})


def change_draft(event: ChangeEvent, *, max_bytes: int) -> tuple[Draft, bool]:
    """The draft of a published event, and whether it had to stand for an event over ``max_bytes``.

    An update with a patch (and a document) gets its patch-only variant too. When only the full
    variant is over ``max_bytes``, patch-only subscribers still get the patch.

    Raises ``TypeError`` or ``ValueError`` (``orjson.JSONEncodeError``) for a document that JSON
    cannot represent.
    """
    assert event.flow_id is not None and event.event_type is not None
    payload = change_payload(event)
    encoded = orjson.dumps(payload)
    size = len(encoded) + MESSAGE_OVERHEAD_BYTES
    too_large = size > max_bytes
    if too_large:
        encoded = orjson.dumps(oversize_payload(payload, size))
    patch_encoded = b""
    if payload["patch"] is not None and payload["document"] is not None:
        patch_encoded = orjson.dumps(patch_only_payload(payload))
        if len(patch_encoded) + MESSAGE_OVERHEAD_BYTES > max_bytes:
            patch_encoded = b""  # the full variant, which stands for the event, for everyone
    key = document_key(event.document_id)
    draft = Draft(event.flow_id, event.event_type, encoded, event.collection, event.operation, key, patch_encoded)
    return draft, too_large


def coalesced_frame(latest: Frame, count: int) -> Frame:
    """``count`` queued changes of one document as one: its latest state (or its deletion)."""
    payload = latest.payload()
    operation: Literal["replace", "delete"] = "delete" if latest.operation == "delete" else "replace"
    coalesced: CoalescedPayload = cast(
        CoalescedPayload, {**payload, "operation": operation, "patch": None, "coalesced": count}
    )
    data = message(latest.event_type, coalesced, event_id=latest.position)
    # The whole latest document stands for every patch in between, for patch-only subscribers too.
    return dataclasses.replace(latest, data=data, operation=operation, patch_data=b"")


def collapsed_frame(last_skipped: Frame, skipped: int) -> Frame:
    """Stands for ``skipped`` log chunks that a slow client did not receive."""
    payload = last_skipped.payload()
    collapsed: SkippedPayload = cast(
        SkippedPayload,
        {**payload, "operation": "skipped", "documentId": None, "document": None, "patch": None, "skipped": skipped},
    )
    data = message(last_skipped.event_type, collapsed, event_id=last_skipped.position)
    return dataclasses.replace(last_skipped, data=data, operation="skipped", document_key="", patch_data=b"")


def message(
    event_type: str, payload: Mapping[str, Any], *, event_id: str | None = None, retry_ms: int | None = None
) -> bytes:
    """One SSE message. ``data`` is a single line: orjson never emits a raw newline."""
    head = b"event: " + event_type.encode("ascii") + b"\n"
    if event_id:
        head += b"id: " + event_id.encode("ascii") + b"\n"
    if retry_ms is not None:
        head += b"retry: " + str(retry_ms).encode("ascii") + b"\n"
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"


def resync_frame(flow_id: str, reason: str, *, event_id: str = "", retry_ms: int | None = None) -> Frame:
    payload: ResyncPayload = {
        "type": "RESYNC",
        "flowId": flow_id,
        "reason": reason,
        "resumable": reason in RESUMABLE_REASONS,
    }
    return Frame(flow_id, RESYNC, message(RESYNC, payload, event_id=event_id, retry_ms=retry_ms), event_id)


def position_frame(event_id: str, *, comment: str = "heartbeat", retry_ms: int | None = None) -> Frame:
    """A comment that also moves the client's last event id (an id-only message dispatches no event)."""
    text = b": " + comment.encode("ascii") + b"\n"
    if retry_ms is not None:
        text += b"retry: " + str(retry_ms).encode("ascii") + b"\n"
    data = text + (b"id: " + event_id.encode("ascii") + b"\n\n" if event_id else b"\n")
    return Frame("", "", data, event_id)


def comment(text: str) -> bytes:
    return b": " + text.encode("ascii", "replace") + b"\n\n"
