"""A flow's ``SNAPSHOT``: its current filtered documents, consistent with the events that follow.

The subscriber is held (its live frames queue up) while the flow's documents are read with
majority read concern. The hub's barrier then waits until every change committed up to the read's
cluster time has been published, and the changes queued meanwhile are folded into the documents:
the snapshot stands for them, and its id is the live position. Nothing awaits between the fold and
the release of the subscriber.

The live stream alone proves that slowly when the database is idle: by a later change, or by empty
polls that began after the read, each as long as ``stream.max_await_time_ms``. So, beside the
barrier, the snapshot asks the server: a short change stream with the live stream's pipeline,
resumed after the hub's position (everything up to it is published), polled once. When it comes back
empty, or its first change is later than the read, nothing the read holds is still to be published.
That reads positions only; it never writes to the database.

What a client receives: the ``SNAPSHOT`` first, then the queued frames that the snapshot does not
stand for (log chunks it does not hold, collections not in the snapshot) without ids, so that its
last event id stays the snapshot's. A queued change that cannot be folded (a reset, or a change too large to
carry its document) makes the snapshot read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from filters import ChangeEvent, Pipeline, Route

from ..codec import cluster_time_of, decode_token, parse_event_id, routable_flow_id, to_plain
from ..errors import SourceError
from ..frames import RESYNC, SNAPSHOT, Frame, document_key, message
from ..hub import ClusterTime, Hub
from ..payloads import SnapshotLog
from ..queries import watch_pipeline
from ..routes import RouteOptions
from .broadcast import Subscriber
from .log_tail import log_tail, value_at

logger = logging.getLogger(__name__)

# Reads of one snapshot before changes that cannot be folded are sent as they are.
MAX_READS = 3
# How long the probe's one poll waits for a change: it only needs what is committed already.
PROBE_AWAIT_MS = 1
# What the probe reads of a change: its position and its time.
PROBE_PROJECTION = {"$project": {"_id": 1, "clusterTime": 1}}


class Poll(Protocol):
    async def try_next(self) -> Mapping[str, Any] | None: ...


class FlowReader(Protocol):
    """What a snapshot needs of the database (``changesync.mongo.Database``)."""

    async def read_flow(
        self,
        route: Route,
        flow_id: str,
        *,
        limit: int,
        newest_first: bool,
        where: Mapping[str, Any] | None = None,
    ) -> tuple[list[dict[str, Any]], ClusterTime | None]: ...

    def stream(
        self, pipeline: Sequence[Mapping[str, Any]], **options: Any
    ) -> contextlib.AbstractAsyncContextManager[Poll]: ...


@dataclass(slots=True)
class _Read:
    documents: dict[str, dict[str, Any]]
    """By collection, the documents by key."""
    collections: dict[str, dict[str, Any]]
    """By collection, the payload's entry without its documents."""
    time: ClusterTime | None
    logs: dict[str, SnapshotLog] = field(default_factory=dict)
    """By log collection (``snapshot = "log"``), the latest execution's text."""
    log_chunks: dict[str, set[str]] = field(default_factory=dict)
    """By log collection, the keys of the chunks read: their events are in the text already."""

    def saw(self, time: ClusterTime | None) -> None:
        if time is not None and (self.time is None or time > self.time):
            self.time = time


class Snapshots:
    def __init__(
        self,
        reader: FlowReader,
        pipeline: Pipeline,
        route_options: Mapping[str, RouteOptions],
        hub: Hub,
        *,
        timeout_s: float,
    ) -> None:
        if pipeline.memo_documents:
            raise ValueError("the snapshot pipeline must not have a memo: snapshots keep no documents")
        self.reader = reader
        self.pipeline = pipeline
        self.route_options = route_options
        self.hub = hub
        self.timeout_s = timeout_s
        self._probe_pipeline = [*watch_pipeline(list(pipeline.routes.values())), PROBE_PROJECTION]

    async def take(self, subscriber: Subscriber) -> bytes:
        """The snapshot of the subscriber's flow, and what follows it; the subscriber stays held."""
        later: list[bytes] = []
        for attempt in range(1, MAX_READS + 1):
            read = await self._read(subscriber)
            async with asyncio.timeout(self.timeout_s):
                await self._caught_up(read.time)
            # From here on nothing awaits until the caller releases the subscriber.
            # A subscriber closed meanwhile (its farewell is queued) gets what there is, at once.
            settle = attempt == MAX_READS or subscriber.closed_reason is not None
            tail = self._fold(read, subscriber.take(), later, settle=settle)
            if tail is not None:
                break
            logger.debug("snapshot of flow %s read again: a change could not be folded", subscriber.flow_id)
        for collection, entry in read.collections.items():
            entry["documents"] = list(read.documents[collection].values())
        payload = {"type": SNAPSHOT, "flowId": subscriber.flow_id, "collections": read.collections, "logs": read.logs}
        return b"".join([message(SNAPSHOT, payload, event_id=self.hub.position), *later, *(tail or ())])

    async def _caught_up(self, after: ClusterTime | None) -> None:
        """Until every change committed at or before ``after`` was published: the hub's barrier, or
        sooner the probe (``stream_passed``) when it proves it."""
        barrier = self.hub.barrier(after)
        position = self.hub.position
        if barrier.done() or after is None or not position:
            await barrier
            return
        probe = asyncio.ensure_future(self.stream_passed(position, after))
        try:
            await asyncio.wait((barrier, probe), return_when=asyncio.FIRST_COMPLETED)
            if not barrier.done() and not (probe.done() and probe.result()):
                await barrier
        finally:
            probe.cancel()
            barrier.cancel()

    async def stream_passed(self, position: str, after: ClusterTime) -> bool:
        """Whether the live stream, having published everything up to the hub's ``position``, has
        nothing at or before ``after`` still to publish. The poll begins after the read, so a change
        the read holds is committed by then: it would be the first one after ``position``."""
        try:
            token = decode_token(parse_event_id(position).position)
            async with self.reader.stream(
                self._probe_pipeline, max_await_time_ms=PROBE_AWAIT_MS, resume_after=token, images=False
            ) as stream:
                change = await stream.try_next()
        except (SourceError, ValueError) as exc:
            logger.debug("the snapshot's probe failed (%s); waiting for the live stream", exc)
            return False
        if change is None:
            return True
        time = cluster_time_of(change)
        return time is not None and time > after

    async def _read(self, subscriber: Subscriber) -> _Read:
        flow_id = subscriber.flow_id
        read = _Read({}, {}, None)
        for collection, route in self.pipeline.routes.items():
            options = self.route_options.get(collection, RouteOptions())
            if options.snapshot == "none" or not subscriber.wants(route.event_type):
                continue
            if options.snapshot == "log":
                await self._read_log(read, route, options, flow_id)
                continue
            limit = 1 if options.snapshot in ("one", "latest") else options.snapshot_limit
            raw, operation_time = await self.reader.read_flow(
                route, flow_id, limit=limit, newest_first=options.snapshot == "latest"
            )
            read.saw(operation_time)
            read.documents[collection] = self._visible(collection, flow_id, raw)
            read.collections[collection] = {"eventType": route.event_type, "truncated": len(raw) >= limit > 1}
        return read

    async def _read_log(self, read: _Read, route: Route, options: RouteOptions, flow_id: str) -> None:
        """The chunks of the execution of the flow's newest chunk, newest first, up to the limit."""
        collection = route.collection
        newest, operation_time = await self.reader.read_flow(route, flow_id, limit=1, newest_first=True)
        read.saw(operation_time)
        chunks: dict[str, dict[str, Any]] = {}
        execution_id: Any = None
        if newest:
            raw_execution = value_at(newest[0], options.log_execution)
            raw, operation_time = await self.reader.read_flow(
                route,
                flow_id,
                limit=options.snapshot_limit,
                newest_first=True,
                where={options.log_execution: raw_execution},
            )
            read.saw(operation_time)
            execution_id = to_plain(raw_execution)
            chunks = self._visible(collection, flow_id, raw)
            complete = len(raw) < options.snapshot_limit
        else:
            complete = True
        read.log_chunks[collection] = set(chunks)
        read.logs[collection] = log_tail(route.event_type, execution_id, chunks.values(), options, read_all=complete)

    def _visible(self, collection: str, flow_id: str, raw: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The filtered documents of ``raw`` that the flow may see, by key, in ``raw``'s order."""
        documents: dict[str, dict[str, Any]] = {}
        for document in raw:
            filtered = self._filter_document(collection, document)
            if filtered is not None and filtered.flow_id == flow_id and filtered.full_document is not None:
                documents[document_key(filtered.document_id)] = filtered.full_document
        return documents

    def _fold(self, read: _Read, queued: list[Frame], later: list[bytes], *, settle: bool) -> list[bytes] | None:
        """Fold the queued changes into ``read``. Frames the snapshot does not stand for go to
        ``later`` (without ids); the returned list holds what must follow even those (a farewell).

        ``None`` when a change could not be folded and the flow must be read again, unless
        ``settle``: then a reset is sent after the snapshot, and a document too large for its frame
        is left out of it (the frame, which tells the client to refetch it, follows).
        """
        tail: list[bytes] = []
        read_again = False
        for frame in queued:
            if not frame.is_change:
                if frame.event_type == RESYNC:
                    if settle:
                        tail.append(frame.data)
                    else:
                        read_again = True  # the data was reset under the read
                continue  # heartbeats: the snapshot carries the position
            documents = read.documents.get(frame.collection)
            if documents is None:
                chunks = read.log_chunks.get(frame.collection)
                if chunks is None or frame.document_key not in chunks:
                    later.append(frame.without_id())
                continue
            if read_again:
                continue
            payload = frame.payload()
            key = frame.document_key
            if payload.get("tooLarge"):
                if settle:
                    documents.pop(key, None)
                    later.append(frame.without_id())
                else:
                    read_again = True  # its document is not in the frame; the next read has it
                continue
            document = payload.get("document")
            if frame.operation == "delete":
                documents.pop(key, None)
            elif document is None:
                continue
            elif self.route_options.get(frame.collection, RouteOptions()).snapshot != "latest" or key in documents:
                documents[key] = document
            elif frame.operation == "insert":
                documents.clear()  # a newer document is now the latest
                documents[key] = document
        return None if read_again else tail

    def _filter_document(self, collection: str, document: Mapping[str, Any]) -> ChangeEvent | None:
        if not routable_flow_id(value_at(document, self.pipeline.routes[collection].flow_id_path)):
            return None
        plain = to_plain(document)
        event = ChangeEvent(
            collection=collection,
            operation="insert",
            document_id=plain.get("_id"),
            full_document=plain,
            document_key={"_id": plain.get("_id")},
        )
        result = self.pipeline.process(event)
        return result if isinstance(result, ChangeEvent) else None
