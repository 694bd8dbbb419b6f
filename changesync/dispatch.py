"""From a raw change to deliveries in subscriber queues: convert, filter, encode once, fan out.

The dispatcher also keeps the stream's clock: the position clients are told in heartbeats, the
cluster time of the latest change, and barriers that wait until everything committed before a
given cluster time has been dispatched. Everything here is synchronous: while one change is being
dispatched, no subscriber can join or leave, so joins are exact.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from filters import ChangeEvent, Drop, PatchConflictError, Pipeline, apply_update

from .broadcast import Broker, Delivery, Subscriber
from .codec import encode_token, identity_key, to_change_event
from .events import (
    RESYNC,
    change_payload,
    coalesced_payload,
    collapsed_payload,
    frame,
    oversize_payload,
    resync_frame,
)
from .images import REMEASURE_EVERY, PostImages
from .logs import RateLimitedLog
from .metrics import Metrics
from .replay import ReplayBuffer
from .settings import Settings
from .source import DATA_OPERATIONS, Change

logger = logging.getLogger(__name__)

ClusterTime = tuple[int, int]
# A safety bound only: the live pipeline forgets each document when the dispatcher lets it go.
MEMO_DOCUMENTS = 100_000


def encode_frame(event: ChangeEvent, position: str) -> bytes:
    """The SSE message for a published event; its id is the change's resume token."""
    assert event.event_type is not None
    return frame(event.event_type, change_payload(event), event_id=position)


def coalesced_delivery(event: ChangeEvent, position: str, count: int) -> Delivery:
    assert event.event_type is not None
    data = frame(event.event_type, coalesced_payload(event, count), event_id=position)
    return Delivery(event.event_type, data, position, event)


def collapsed_delivery(event: ChangeEvent, position: str, skipped: int) -> Delivery:
    assert event.event_type is not None
    data = frame(event.event_type, collapsed_payload(event, skipped), event_id=position)
    return Delivery(event.event_type, data, position, event)


def cluster_time_of(change: Change) -> ClusterTime | None:
    stamp = change.get("clusterTime")
    return None if stamp is None else (stamp.time, stamp.inc)


@dataclass(slots=True)
class Clock:
    """Where the live stream is: what a client that joins now has not yet missed.

    ``time`` is the cluster time of the latest dispatched change (or of the stream's start), and
    ``positions_at_time`` the changes already dispatched at exactly that time: a transaction's
    changes share one cluster time and may arrive in several batches.
    """

    time: ClusterTime | None = None
    positions_at_time: set[str] = field(default_factory=set)

    def copy(self) -> Clock:
        return Clock(self.time, set(self.positions_at_time))

    def has_dispatched(self, time: ClusterTime | None, position: str) -> bool:
        """Whether a change at ``time`` with ``position`` was dispatched before this clock was read."""
        if self.time is None or time is None:
            return False
        return time < self.time or (time == self.time and position in self.positions_at_time)


class _Keep(NamedTuple):
    """An update's post-image is to be kept, under this identity key and counted size."""

    key: bytes
    size: int
    updates: int


def _ambiguous(description: Mapping[str, Any]) -> bool:
    if "disambiguatedPaths" in description:
        return False
    keys = [
        *(description.get("updatedFields") or {}),
        *(description.get("removedFields") or ()),
        *(entry.get("field", "") for entry in description.get("truncatedArrays") or () if isinstance(entry, Mapping)),
    ]
    return any(isinstance(key, str) and "." in key for key in keys)


class Dispatcher:
    def __init__(
        self,
        pipeline: Pipeline,
        broker: Broker,
        metrics: Metrics,
        replay: ReplayBuffer,
        *,
        retry_ms: int,
        max_event_bytes: int = 1024 * 1024,
        document_cache_bytes: int = 0,
        history_pipeline: Pipeline | None = None,
    ) -> None:
        """``pipeline`` filters the live stream; give it a memo (``memo_documents``) when
        ``document_cache_bytes`` is on, and a ``history_pipeline`` without one for catch-ups."""
        if pipeline.memo_documents and not (document_cache_bytes and history_pipeline is not None):
            raise ValueError("a pipeline with a memo needs the document cache and a history_pipeline without one")
        if history_pipeline is not None and history_pipeline.memo_documents:
            raise ValueError("the history_pipeline must not have a memo: catch-ups keep no documents")
        self.pipeline = pipeline
        self.history_pipeline = history_pipeline or pipeline
        self.images = PostImages(document_cache_bytes, on_evict=pipeline.forget)
        self.broker = broker
        self.metrics = metrics
        self.replay = replay
        self.retry_ms = retry_ms
        self.max_event_bytes = max_event_bytes
        self.clock = Clock()
        self.position = ""
        """The encoded position after the latest change or empty poll: safe for an idle client."""
        self._rare = RateLimitedLog(logger)
        self._barriers: list[tuple[ClusterTime | None, int, asyncio.Future[None]]] = []
        self._flow_id_paths = {
            collection: tuple(route.flow_id_path.split(".")) for collection, route in pipeline.routes.items()
        }
        self._polls_completed = 0

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        broker: Broker,
        metrics: Metrics,
        replay: ReplayBuffer,
        *,
        history_pipeline: Pipeline | None = None,
        stages: Mapping[str, Any] | None = None,
    ) -> Dispatcher:
        """The service's dispatcher: the live pipeline remembers projections when the document cache is on."""
        stream = settings.stream
        stages = settings.load_stages() if stages is None else stages
        memo_documents = MEMO_DOCUMENTS if stream.document_cache_bytes else 0
        return cls(
            Pipeline(settings.routes, stages=stages, memo_documents=memo_documents),
            broker,
            metrics,
            replay,
            retry_ms=stream.retry_ms,
            max_event_bytes=settings.limits.max_event_bytes,
            document_cache_bytes=stream.document_cache_bytes,
            history_pipeline=history_pipeline or Pipeline(settings.routes, stages=stages),
        )

    # --- the live stream ----------------------------------------------------------------------

    def on_start(self, start_time: ClusterTime | None, position: Mapping[str, Any] | None) -> None:
        """The stream (re)opened at ``start_time``; nothing before it will be dispatched live."""
        if start_time is not None:
            self.clock = Clock(start_time, set())
        # A reopened stream resumes where it stopped, but a change may have been stepped over.
        self.images.clear()
        if position is not None:
            self.position = encode_token(position)

    def on_change(self, change: Change) -> None:
        started = time.perf_counter()
        operation = change.get("operationType")
        position = encode_token(change["_id"])
        self._advance(cluster_time_of(change), position)
        try:
            if operation in DATA_OPERATIONS:
                for flow_id, delivery in self.render(change, position):
                    # The buffer keeps the frame only: its budget counts bytes, and documents are larger.
                    self.replay.record(flow_id, Delivery(delivery.event_type, delivery.frame, position))
                    delivered = self.broker.publish(flow_id, delivery)
                    if delivered:
                        self.metrics.labelled(self.metrics.events_out, delivery.event_type).inc(delivered)
            elif operation in ("drop", "rename"):
                self._on_collection_gone(change, str(operation))
            elif operation in ("dropDatabase", "invalidate"):
                self.metrics.events_in.labels(collection="", operation=str(operation)).inc()
                self.reset("database-dropped" if operation == "dropDatabase" else "invalidated")
        except Exception as exc:
            # One event must never stop the stream: count it, log it, go on with the next.
            self.images.clear()
            self.metrics.events_skipped.labels(reason="internal-error").inc()
            self._rare.warning("internal-error", "skipped a %s event after an internal error (%r)", operation, exc)
        self.metrics.processing_seconds.observe(time.perf_counter() - started)

    def on_idle(self, position: Mapping[str, Any] | None, poll_number: int) -> None:
        """An empty poll that started as poll ``poll_number`` returned: the stream is caught up."""
        if position is not None:
            self.position = encode_token(position)
        self._polls_completed = poll_number
        self._settle_barriers()

    def _advance(self, cluster_time: ClusterTime | None, position: str) -> None:
        self.position = position
        if cluster_time is not None:
            if cluster_time != self.clock.time:
                self.clock = Clock(cluster_time, set())
            self.clock.positions_at_time.add(position)
        if self._barriers:
            self._settle_barriers()

    def barrier(self, after: ClusterTime | None, polls_started: int) -> asyncio.Future[None]:
        """A future that resolves once every change committed at or before ``after`` was dispatched.

        That is the case when a change with a later cluster time was dispatched, or when a poll that
        started after this call (numbered above ``polls_started``) came back empty.
        """
        future = asyncio.get_running_loop().create_future()
        self._barriers.append((after, polls_started, future))
        self._settle_barriers()
        return future

    def _settle_barriers(self) -> None:
        pending = []
        for after, polls_started, future in self._barriers:
            passed_time = after is not None and self.clock.time is not None and self.clock.time > after
            if future.done():
                continue
            if passed_time or self._polls_completed > polls_started:
                future.set_result(None)
            else:
                pending.append((after, polls_started, future))
        self._barriers = pending

    # --- turning changes into deliveries ------------------------------------------------------

    def render(self, change: Change, position: str, *, live: bool = True) -> list[tuple[str, Delivery]]:
        """The deliveries a data change makes, by flow. Live changes are counted in the metrics;
        replays of history for one client are not."""
        collection = str(change.get("ns", {}).get("coll", ""))
        operation = str(change.get("operationType"))
        if live:
            self.metrics.labelled(self.metrics.events_in, collection, operation).inc()
        try:
            if live:
                result = self.process_live(change, collection)
            else:
                result = self.history_pipeline.process_all(
                    to_change_event(change, flow_id_path=self._flow_id_paths.get(collection))
                )
        except Exception as exc:
            if live:
                self.images.clear()
            self.metrics.events_skipped.labels(reason="malformed").inc()
            self._rare.warning(
                "malformed", "skipped a malformed %s event on %s (%s)", operation, collection, type(exc).__name__
            )
            return []
        if isinstance(result, Drop):
            if not live:
                return []
            self.metrics.labelled(self.metrics.events_dropped, result.reason, collection).inc()
            if result.reason in ("unroutable", "unverifiable", "stage-error"):
                self._rare.warning(
                    f"{result.reason}:{collection}",
                    "dropped a %s event on %s: %s (%s)",
                    operation,
                    collection,
                    result.reason,
                    result.detail,
                )
            return []
        return list(self._encode(result, position, live=live))

    def process_live(self, change: Change, collection: str) -> tuple[ChangeEvent, ...] | Drop:
        """Convert and filter a live data change. An update starts from the document's kept post-image
        (instead of converting its pre-image) and leaves its own for the next one."""
        event, keep = self._convert_live(change, collection)
        result = self.pipeline.process_all(event)
        before, after = event.full_document_before_change, event.full_document
        if keep is not None and after is not None:
            self.images.put(collection, keep.key, after, keep.size, keep.updates)
        # The live pipeline remembers the projections of updates' post-images: only kept ones may stay.
        if event.operation == "update":
            if before is not None and before is not after:
                self.pipeline.forget(collection, before)
            if after is not None and (keep is None or not self.images.holds(collection, keep.key, after)):
                self.pipeline.forget(collection, after)
        return result

    def _convert_live(self, change: Change, collection: str) -> tuple[ChangeEvent, _Keep | None]:
        flow_id_path = self._flow_id_paths.get(collection)
        images = self.images
        operation = change.get("operationType")
        # An inserted document has no image kept: its id was deleted (which let the image go) or never
        # used. Log chunks, the most frequent events, are inserts.
        key = identity_key(change.get("documentKey")) if images.enabled and operation != "insert" else None
        if key is None:
            return to_change_event(change, flow_id_path=flow_id_path), None
        if operation != "update":
            images.discard(collection, key)
            return to_change_event(change, flow_id_path=flow_id_path), None
        description = change.get("updateDescription")
        # Without disambiguatedPaths (MongoDB 6.0) a dotted key may name a field with dots: the
        # post-image built from it may be wrong, and must not become the next pre-image.
        exact = isinstance(description, Mapping) and not _ambiguous(description)
        kept = images.get(collection, key) if exact and change.get("fullDocumentBeforeChange") is not None else None
        event = to_change_event(change, flow_id_path=flow_id_path, before=None if kept is None else kept.document)
        before, update = event.full_document_before_change, event.update_description
        if before is None or update is None:
            images.discard(collection, key)
            return event, None
        try:
            after = apply_update(before, update)
        except PatchConflictError:
            images.discard(collection, key)
            return event, None
        event = ChangeEvent(
            collection=event.collection,
            operation=event.operation,
            document_id=event.document_id,
            full_document=after,
            full_document_before_change=before,
            update_description=update,
            cluster_time=event.cluster_time,
            wall_time=event.wall_time,
            document_key=event.document_key,
        )
        try:
            if kept is not None and kept.updates < REMEASURE_EVERY:
                size, updates = kept.size + len(orjson.dumps(update.updated_fields)), kept.updates + 1
            else:
                size, updates = len(orjson.dumps(after)), 0
        except (TypeError, orjson.JSONEncodeError):
            exact = False
        if not exact:
            images.discard(collection, key)
            return event, None
        return event, _Keep(key, size, updates)

    def _encode(self, events: Iterable[ChangeEvent], position: str, *, live: bool) -> Iterable[tuple[str, Delivery]]:
        for event in events:
            assert event.flow_id is not None and event.event_type is not None
            try:
                data = encode_frame(event, position)
                if len(data) > self.max_event_bytes:
                    if live:
                        self.metrics.events_skipped.labels(reason="too-large").inc()
                    data = frame(event.event_type, oversize_payload(event, len(data)), event_id=position)
            except (TypeError, ValueError, orjson.JSONEncodeError) as exc:
                self.metrics.events_skipped.labels(reason="unserialisable").inc()
                self._rare.warning(
                    "unserialisable", "skipped an event on %s that cannot be encoded (%s)", event.collection, exc
                )
                continue
            if live:
                self.metrics.labelled(self.metrics.events_published, event.event_type, event.collection).inc()
            yield event.flow_id, Delivery(event.event_type, data, position, event)

    # --- resets -------------------------------------------------------------------------------

    def _on_collection_gone(self, change: Change, operation: str) -> None:
        collection = str(change.get("ns", {}).get("coll", ""))
        self.metrics.labelled(self.metrics.events_in, collection, operation).inc()
        logger.warning("watched collection %s saw %s; every client must resync", collection, operation)
        self.reset(f"collection-{operation}")

    def reset(self, reason: str) -> None:
        """Every client must reload: what it holds can no longer be brought up to date by events."""
        self.replay.forget()
        self.images.clear()
        self.broker.announce(
            lambda flow_id: Delivery(RESYNC, resync_frame(flow_id, reason, event_id=self.position), self.position)
        )

    def skip(self, change: Change) -> None:
        """A change the stream could not deliver was stepped over: count it, and resync everyone."""
        self._advance(cluster_time_of(change), encode_token(change["_id"]))
        self.metrics.events_skipped.labels(reason="undeliverable").inc()
        self.reset("event-skipped")

    def on_overflow(self, subscriber: Subscriber) -> None:
        self.metrics.clients_disconnected_slow.inc()
        self._rare.warning("slow-consumer", "disconnected a slow client of flow %s", subscriber.flow_id)
