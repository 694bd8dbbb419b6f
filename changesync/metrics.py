"""Prometheus metrics. Each application owns its own registry, so several can live in one process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "Metric", "Metrics"]

PROCESSING_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


@dataclass(frozen=True, slots=True)
class Metric:
    """One exported metric, as ``docs/operations.md`` lists it."""

    name: str
    """As scraped: counters end in ``_total``."""
    kind: str
    labels: tuple[str, ...]
    help: str


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.catalogue: list[Metric] = []
        self.events_in = self._counter(
            "changesync_events_in", "Change events read from MongoDB.", "collection", "operation"
        )
        self.events_published = self._counter(
            "changesync_events_published",
            "Events that passed the filter pipeline and were published to a flow.",
            "type",
            "collection",
        )
        self.events_out = self._counter(
            "changesync_events_out", "Event deliveries queued to SSE clients (one per client and event).", "type"
        )
        self.events_dropped = self._counter(
            "changesync_events_dropped",
            "Change events the pipeline dropped, by reason (private, denied-only, unroutable, ...).",
            "reason",
            "collection",
        )
        self.events_skipped = self._counter(
            "changesync_events_skipped",
            "Change events that could not be processed at all (malformed, not serialisable, too large).",
            "reason",
        )
        self.resyncs = self._counter(
            "changesync_resyncs",
            "RESYNC messages sent to clients, by reason (docs/protocol.md): each one a client that resumes or reloads.",
            "reason",
        )
        self.authorization_errors = self._counter(
            "changesync_authorization_errors",
            "Access checks that could not be made (the database did not answer); the request got 503.",
        )
        self.jwks_fetch_failures = self._counter(
            "changesync_jwks_fetch_failures",
            "Fetches of the JWKS at auth.jwks_url that failed; the keys fetched before stay in use.",
        )
        self.published = self._counter(
            "changesync_published",
            "Events back-end services published (POST /flows/{flowId}/events, the ingest stream).",
            "type",
        )
        self.publish_refused = self._counter(
            "changesync_publish_refused",
            "Published events refused, by reason (unauthorized, forbidden, too-fast, too-large, ...).",
            "reason",
        )
        self.clients_connected = self._gauge("changesync_clients_connected", "Connected SSE clients.")
        self.clients_disconnected_slow = self._counter(
            "changesync_clients_disconnected_slow", "SSE clients cut off because their queue overflowed."
        )
        self.stream_lag_seconds = self._gauge(
            "changesync_change_stream_lag_seconds",
            "Seconds between a change's wallTime and its processing; 0 while the stream is idle.",
        )
        self.stream_restarts = self._counter(
            "changesync_change_stream_restarts", "Times the change stream was reopened after an error, by kind.", "kind"
        )
        processing_help = "Time from a change leaving the driver to its frames being queued for every subscriber."
        self.processing_seconds = Histogram(
            "changesync_event_processing_seconds", processing_help, buckets=PROCESSING_BUCKETS, registry=self.registry
        )
        self.catalogue.append(Metric("changesync_event_processing_seconds", "histogram", (), processing_help))
        self._children: dict[tuple[Counter, tuple[str, ...]], Any] = {}

    def _counter(self, name: str, help: str, *labels: str) -> Counter:
        self.catalogue.append(Metric(name + "_total", "counter", labels, help))
        return Counter(name, help, labels, registry=self.registry)

    def _gauge(self, name: str, help: str) -> Gauge:
        self.catalogue.append(Metric(name, "gauge", (), help))
        return Gauge(name, help, registry=self.registry)

    def labelled(self, metric: Counter, *values: str) -> Any:
        """``metric.labels(*values)`` (in label order), looked up once: ``labels`` validates and takes a
        lock on every call, which the per-event path cannot afford. Label values must be bounded."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def render(self) -> bytes:
        return generate_latest(self.registry)
