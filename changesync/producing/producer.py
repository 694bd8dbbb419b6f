"""The live path, stage after stage: convert → filter → encode → publish to the hub.

``Producer`` is the watcher's listener. For every change it converts the raw event (with the kept
post-images), runs the filter pipeline, encodes one frame per flow and hands them, with the
change's position, to the hub in one call. Resets (a collection dropped, the position lost) tell
the hub that every client must reload. Everything here is synchronous: while one change is being
produced no subscriber can join or leave, so joins are exact.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from filters import Drop, Pipeline

from ..codec import cluster_time_of, encode_token
from ..frames import Draft
from ..hub import Sink
from ..logs import RateLimitedLog
from ..metrics import Metrics
from ..mongo import Change, ClusterTime
from ..queries import DATA_OPERATIONS, RESET_OPERATIONS
from ..resync import reason_for_operation
from ..settings import Settings
from .convert import LiveConverter
from .encode import encode
from .images import PostImages

logger = logging.getLogger(__name__)

# Drops that point at a misconfiguration or a bad writer: worth a (rate-limited) warning.
NOTEWORTHY_DROPS = frozenset({"unroutable", "unverifiable", "stage-error"})
# A safety bound only: the live pipeline forgets each document when the document cache lets it go.
MEMO_DOCUMENTS = 100_000


class Producer:
    def __init__(
        self,
        converter: LiveConverter,
        pipeline: Pipeline,
        hub: Sink,
        metrics: Metrics,
        *,
        max_event_bytes: int,
    ) -> None:
        """``pipeline`` is the live one: give it a memo (``memo_documents``) when the converter keeps
        images, so that updates of kept documents project only what changed."""
        self.converter = converter
        self.pipeline = pipeline
        self.hub = hub
        self.metrics = metrics
        self.max_event_bytes = max_event_bytes
        self._rare = RateLimitedLog(logger)

    # --- what the watcher tells ---------------------------------------------------------------

    def on_start(self, start_time: ClusterTime | None, token: Mapping[str, Any] | None) -> None:
        """The stream (re)opened; at ``start_time`` when it starts afresh. A reopened stream resumes
        where it stopped, but a change may have been stepped over: the kept images go."""
        self.converter.clear()
        self.hub.start(None if token is None else encode_token(token), start_time)

    def on_change(self, change: Change) -> None:
        started = time.perf_counter()
        operation = str(change.get("operationType"))
        position = encode_token(change["_id"])
        drafts: list[Draft] = []
        reset_reason = None
        try:
            if operation in DATA_OPERATIONS:
                drafts = self.drafts(change)
            elif operation in RESET_OPERATIONS:
                reset_reason = self._reset_reason(change, operation)
        except Exception as exc:
            # One event must never stop the stream: count it, log it, go on with the next.
            self.converter.clear()
            self.metrics.events_skipped.labels(reason="internal-error").inc()
            self._rare.warning("internal-error", "skipped a %s event after an internal error (%r)", operation, exc)
        self.hub.publish(position, cluster_time_of(change), drafts)
        if reset_reason is not None:
            self.reset(reset_reason)
        self.metrics.processing_seconds.observe(time.perf_counter() - started)

    def on_idle(self, token: Mapping[str, Any] | None) -> None:
        """An empty poll returned: the stream is caught up."""
        self.hub.idle(None if token is None else encode_token(token))

    async def drain(self) -> None:
        """Until the hub has taken what was published (the watcher waits here between batches)."""
        await self.hub.drain()

    def reset(self, reason: str) -> None:
        """Every client must reload: what it holds can no longer be brought up to date by events."""
        self.converter.clear()
        self.hub.reset(reason)

    def skip(self, change: Change) -> None:
        """A change the stream could not deliver was stepped over: count it, and resync everyone."""
        self.hub.publish(encode_token(change["_id"]), cluster_time_of(change), [])
        self.metrics.events_skipped.labels(reason="undeliverable").inc()
        self.reset("event-skipped")

    # --- the stages ---------------------------------------------------------------------------

    def drafts(self, change: Change) -> list[Draft]:
        """A data change through convert → filter → encode: its drafts, one per flow it concerns."""
        collection = str(change.get("ns", {}).get("coll", ""))
        operation = str(change.get("operationType"))
        metrics = self.metrics
        metrics.labelled(metrics.events_in, collection, operation).inc()
        try:
            converted = self.converter.convert(change)
            result = self.pipeline.process_all(converted.event, remember=converted.kept)
        except Exception as exc:
            self.converter.clear()
            metrics.events_skipped.labels(reason="malformed").inc()
            self._rare.warning(
                "malformed", "skipped a malformed %s event on %s (%s)", operation, collection, type(exc).__name__
            )
            return []
        if isinstance(result, Drop):
            metrics.labelled(metrics.events_dropped, result.reason, collection).inc()
            if result.reason in NOTEWORTHY_DROPS:
                self._rare.warning(
                    f"{result.reason}:{collection}",
                    "dropped a %s event on %s: %s (%s)",
                    operation,
                    collection,
                    result.reason,
                    result.detail,
                )
            return []
        encoded = encode(result, max_event_bytes=self.max_event_bytes)
        if encoded.too_large:
            metrics.events_skipped.labels(reason="too-large").inc(encoded.too_large)
        for error in encoded.errors:
            metrics.events_skipped.labels(reason="unserialisable").inc()
            self._rare.warning(
                "unserialisable", "skipped an event on %s that cannot be encoded (%s)", collection, error
            )
        for draft in encoded.drafts:
            metrics.labelled(metrics.events_published, draft.event_type, collection).inc()
        return encoded.drafts

    def _reset_reason(self, change: Change, operation: str) -> str:
        collection = str(change.get("ns", {}).get("coll", ""))
        self.metrics.labelled(self.metrics.events_in, collection, operation).inc()
        if operation in ("drop", "rename"):
            logger.warning("watched collection %s saw %s; every client must resync", collection, operation)
        return reason_for_operation(operation)


def build_producer(
    settings: Settings, hub: Sink, metrics: Metrics, *, stages: Mapping[str, Any] | None = None
) -> Producer:
    """The service's producer: with the document cache on, the live pipeline remembers the
    projections of the documents the cache keeps, and forgets each one the cache lets go."""
    cache_bytes = settings.stream.document_cache_bytes
    pipeline = Pipeline(
        settings.routes,
        stages=settings.load_stages() if stages is None else stages,
        memo_documents=MEMO_DOCUMENTS if cache_bytes else 0,
    )
    converter = LiveConverter(settings.routes, PostImages(cache_bytes, on_evict=pipeline.forget))
    return Producer(converter, pipeline, hub, metrics, max_event_bytes=settings.limits.max_event_bytes)
