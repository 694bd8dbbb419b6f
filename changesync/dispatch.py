"""From a raw change to frames in subscriber queues: convert, filter, encode once, fan out."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from filters import ChangeEvent, Drop, Pipeline

from .broadcast import Broker, Subscriber
from .codec import encode_token, to_change_event
from .events import change_payload, frame, resync_frame
from .logs import RateLimitedLog
from .metrics import Metrics
from .source import DATA_OPERATIONS, Change

logger = logging.getLogger(__name__)


def encode_frame(event: ChangeEvent, token: Any) -> bytes:
    """The SSE message for a published event; its id is the change's resume token."""
    assert event.event_type is not None
    return frame(event.event_type, change_payload(event), event_id=encode_token(token))


class Dispatcher:
    def __init__(self, pipeline: Pipeline, broker: Broker, metrics: Metrics, *, retry_ms: int) -> None:
        self.pipeline = pipeline
        self.broker = broker
        self.metrics = metrics
        self.retry_ms = retry_ms
        self._rare = RateLimitedLog(logger)
        self._watched = frozenset(pipeline.collections)

    def on_change(self, change: Change) -> None:
        started = time.perf_counter()
        operation = change.get("operationType")
        try:
            if operation in DATA_OPERATIONS:
                self._on_data_change(change, str(operation))
            elif operation in ("drop", "rename"):
                self._on_collection_gone(change, str(operation))
            elif operation in ("dropDatabase", "invalidate"):
                self.metrics.events_in.labels(collection="", operation=str(operation)).inc()
                self.on_reset("database-dropped" if operation == "dropDatabase" else "invalidated")
        except Exception as exc:
            # One event must never stop the stream: count it, log it, go on with the next.
            self.metrics.events_skipped.labels(reason="internal-error").inc()
            self._rare.warning("internal-error", "skipped a %s event after an internal error (%r)", operation, exc)
        self.metrics.processing_seconds.observe(time.perf_counter() - started)

    def _on_data_change(self, change: Change, operation: str) -> None:
        collection = str(change.get("ns", {}).get("coll", ""))
        self.metrics.events_in.labels(collection=collection, operation=operation).inc()
        try:
            event = to_change_event(change)
        except Exception as exc:
            self.metrics.events_skipped.labels(reason="malformed").inc()
            self._rare.warning(
                "malformed", "skipped a malformed %s event on %s (%s)", operation, collection, type(exc).__name__
            )
            return
        result = self.pipeline.process(event)
        if isinstance(result, Drop):
            self.metrics.events_dropped.labels(reason=result.reason, collection=collection).inc()
            if result.reason in ("unroutable", "unverifiable", "stage-error"):
                self._rare.warning(
                    f"{result.reason}:{collection}",
                    "dropped a %s event on %s: %s (%s)",
                    operation,
                    collection,
                    result.reason,
                    result.detail,
                )
            return
        self.publish(result, change["_id"])

    def publish(self, event: ChangeEvent, token: Any) -> None:
        assert event.flow_id is not None and event.event_type is not None
        self.metrics.events_published.labels(type=event.event_type, collection=event.collection).inc()
        if not self.broker.has_subscribers(event.flow_id):
            return
        try:
            data = encode_frame(event, token)
        except (TypeError, ValueError, orjson.JSONEncodeError) as exc:
            self.metrics.events_skipped.labels(reason="unserialisable").inc()
            self._rare.warning(
                "unserialisable", "skipped an event on %s that cannot be encoded (%s)", event.collection, exc
            )
            return
        delivered = self.broker.publish(event.flow_id, event.event_type, data)
        if delivered:
            self.metrics.events_out.labels(type=event.event_type).inc(delivered)

    def _on_collection_gone(self, change: Change, operation: str) -> None:
        collection = str(change.get("ns", {}).get("coll", ""))
        self.metrics.events_in.labels(collection=collection, operation=operation).inc()
        logger.warning("watched collection %s saw %s; every client must resync", collection, operation)
        self.on_reset(f"collection-{operation}")

    def on_reset(self, reason: str) -> None:
        self.broker.announce(lambda flow_id: resync_frame(flow_id, reason))

    def on_overflow(self, subscriber: Subscriber) -> None:
        self.metrics.clients_disconnected_slow.inc()
        self._rare.warning("slow-consumer", "disconnected a slow client of flow %s", subscriber.flow_id)
