"""The SSE payload contract: one ``TypedDict`` per JSON object a client can receive.

This module is the single source of the wire format. ``changesync.frames`` builds payloads typed
with these classes (so mypy checks the builders against them), and ``python -m changesync.schema``
writes the JSON Schema (draft 2020-12) that the TypeScript client's types are generated from:
``changesync/schema/events.json``, also served at ``GET /schema/events.json``.

Only the standard library is needed here. The generator (``changesync.schema.generate``, which uses
msgspec, a test/dev dependency) turns the attribute docstrings below into ``description``s, and from
there into JSDoc comments of the TypeScript types.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypeAlias, TypedDict

FlowDocument: TypeAlias = dict[str, Any]
"""A filtered MongoDB document, with BSON values mapped to JSON (see the README's BSON → JSON table)."""
DocumentId: TypeAlias = str | float | bool | dict[str, Any]
"""A document's ``_id``, mapped like any other value (an ObjectId becomes a 24-character hex string)."""
ChangeOperation: TypeAlias = Literal["insert", "update", "replace", "delete"]


class ClusterTime(TypedDict):
    """The oplog time of a write; all writes of one transaction share it."""

    t: int
    """Seconds since the epoch."""
    i: int
    """Increment within the second."""


PatchOperation = TypedDict(
    "PatchOperation",
    {
        "op": Literal["add", "remove", "replace", "move", "copy", "test"],
        "path": str,
        "value": NotRequired[Any],
        "from": NotRequired[str],
    },
)
"""One RFC 6902 JSON Patch operation. changesync emits ``add``, ``remove`` and ``replace``."""


class _ChangeFields(TypedDict):
    type: str
    """The route's event type: ``SYNC_CANVAS``, ``EXECUTION_UPDATE`` or ``LOG_STREAM`` with the default routes."""
    flowId: str
    """The flow the change belongs to."""
    collection: str
    """The MongoDB collection."""
    clusterTime: ClusterTime | None
    """The oplog time of the write."""
    wallTime: str | None
    """ISO-8601 UTC time of the write."""
    origin: NotRequired[str]
    """The mutation id the writer stamped on this write (``[filters] origin_field``, ``meta.mutationId`` by default),
    taken out of the document; absent when the write carried none. A client drops the echoes of its own edits by it."""


class ChangePayload(_ChangeFields):
    """A published change of one document."""

    operation: ChangeOperation
    documentId: DocumentId
    document: FlowDocument | None
    """The filtered document after the change; null for deletes, and for updates whose post-image is unknown.
    Never null otherwise: a non-null ``document`` is always the whole document."""
    patch: list[PatchOperation] | None
    """For updates: turns the previously published document into ``document``; null otherwise, or when the
    update cannot be expressed as a patch (then use ``document``, or refetch when that is null too)."""


class PatchOnlyPayload(_ChangeFields):
    """An update on a connection with ``?updates=patch``: the patch alone, to apply to the previously
    published document. Updates without a patch arrive as a ``ChangePayload`` with the whole document
    (``patch`` null), as on every connection."""

    operation: Literal["update"]
    documentId: DocumentId
    document: None
    patch: list[PatchOperation]
    """Turns the previously published document (from the ``SNAPSHOT`` and the events since) into the new one."""
    patchOnly: Literal[True]
    """Marks the patch-only variant: ``document`` was left out on purpose, not because it is unknown."""


class CoalescedPayload(_ChangeFields):
    """Several changes of one document, merged while a slow client's queue was shed: its latest state."""

    operation: Literal["replace", "delete"]
    """``replace`` with the latest document, or ``delete`` when the last change deleted it."""
    documentId: DocumentId
    document: FlowDocument | None
    """The latest filtered document; null after a delete."""
    patch: None
    coalesced: int
    """How many changes this event stands for."""


class SkippedPayload(_ChangeFields):
    """Stands for log chunks dropped while a slow client's queue was shed (routes with ``overflow = "collapse"``)."""

    operation: Literal["skipped"]
    documentId: None
    document: None
    patch: None
    skipped: int
    """How many events were dropped."""


class TooLargePayload(_ChangeFields):
    """A change too large to send (``limits.max_event_bytes``): refetch the document ``documentId``."""

    operation: ChangeOperation
    documentId: DocumentId
    document: None
    patch: None
    tooLarge: Literal[True]
    size: int
    """The size in bytes the event would have had."""


class SnapshotCollection(TypedDict):
    """What a snapshot holds of one collection."""

    eventType: str
    """The event type of the collection's route: later changes of these documents arrive as this event."""
    truncated: bool
    """True when the route's ``snapshot_limit`` was hit: the flow has more documents than ``documents``."""
    documents: list[FlowDocument]
    """The flow's filtered documents in this collection."""


class SnapshotNodeLog(TypedDict):
    """One node's log output so far, in the latest execution."""

    nodeId: Any
    """The chunks' node id (``log_node``), mapped like any other value."""
    text: str
    """The text of the node's chunks (``log_text``) joined, oldest first: the tail when ``truncated``."""
    chunks: int
    """How many chunks ``text`` joins."""
    truncated: bool
    """True when older chunks were left out (``log_tail_bytes``, ``snapshot_limit``): ``text`` is the tail."""


class SnapshotLog(TypedDict):
    """What a snapshot holds of a log collection (route with ``snapshot = "log"``): the latest execution's output
    by node. Its chunks' events do not follow the snapshot; later chunks do, once each."""

    eventType: str
    """The event type of the collection's route (``LOG_STREAM``): later chunks arrive as this event."""
    executionId: Any
    """The execution (``log_execution``) of the flow's newest chunk; null when the flow has no chunk."""
    nodes: list[SnapshotNodeLog]
    """The execution's nodes that have output, in the order of their first chunk."""


class SnapshotPayload(TypedDict):
    """The flow's current filtered state, consistent with the events that follow it; replaces the client's copy."""

    type: Literal["SNAPSHOT"]
    flowId: str
    collections: dict[str, SnapshotCollection]
    """By collection name; collections whose route has ``snapshot = "none"`` or ``"log"`` are absent."""
    logs: dict[str, SnapshotLog]
    """By collection name: the collections whose route has ``snapshot = "log"`` (``flow_logs`` by default)."""


class ResyncPayload(TypedDict):
    """The client's copy may have a gap."""

    type: Literal["RESYNC"]
    flowId: str
    reason: str
    """Why (docs/protocol.md lists every reason): ``slow-consumer``, ``token-expired``, ``interrupted`` resume;
    ``invalid-id``, ``unknown-position``, ``history-lost``, ``catch-up-failed``, ``catch-up-timeout``,
    ``access-revoked``, ``event-skipped``, ``collection-drop``, ``collection-rename``, ``database-dropped`` and
    ``invalidated`` are not."""
    resumable: bool
    """True: keep your state, the stream ends and reconnecting with the last event id catches up. False: discard
    your state; a ``SNAPSHOT`` follows when snapshots are on, otherwise reload the flow."""


DataPayload: TypeAlias = ChangePayload | PatchOnlyPayload | CoalescedPayload | SkippedPayload | TooLargePayload
"""What a route's event (``SYNC_CANVAS``, ``EXECUTION_UPDATE``, ``LOG_STREAM``…) carries."""
Payload: TypeAlias = DataPayload | SnapshotPayload | ResyncPayload
"""Any ``data:`` object of the event stream."""

DATA_PAYLOADS: tuple[type[Any], ...] = (
    ChangePayload,
    PatchOnlyPayload,
    CoalescedPayload,
    SkippedPayload,
    TooLargePayload,
)
CONTROL_PAYLOADS: tuple[type[Any], ...] = (SnapshotPayload, ResyncPayload)
