"""Prometheus metrics. Each application owns its own registry, so several can live in one process."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events_in = Counter(
            "changesync_events_in",
            "Change events read from MongoDB.",
            ["collection", "operation"],
            registry=self.registry,
        )
        self.events_published = Counter(
            "changesync_events_published",
            "Events that passed the filter pipeline and were published to a flow.",
            ["type", "collection"],
            registry=self.registry,
        )
        self.events_out = Counter(
            "changesync_events_out",
            "Event deliveries queued to SSE clients (one per client and event).",
            ["type"],
            registry=self.registry,
        )
        self.events_dropped = Counter(
            "changesync_events_dropped",
            "Change events the pipeline dropped, by reason (private, denied-only, unroutable, ...).",
            ["reason", "collection"],
            registry=self.registry,
        )
        self.events_skipped = Counter(
            "changesync_events_skipped",
            "Change events that could not be processed at all (malformed, not serialisable).",
            ["reason"],
            registry=self.registry,
        )
        self.authorization_errors = Counter(
            "changesync_authorization_errors",
            "Access checks that could not be made (the database did not answer); the request got 503.",
            registry=self.registry,
        )
        self.clients_connected = Gauge("changesync_clients_connected", "Connected SSE clients.", registry=self.registry)
        self.clients_disconnected_slow = Counter(
            "changesync_clients_disconnected_slow",
            "SSE clients cut off because their queue overflowed.",
            registry=self.registry,
        )
        self.stream_lag_seconds = Gauge(
            "changesync_change_stream_lag_seconds",
            "Seconds between a change's wallTime and its processing; 0 while the stream is idle.",
            registry=self.registry,
        )
        self.stream_restarts = Counter(
            "changesync_change_stream_restarts",
            "Times the change stream was reopened after an error, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.processing_seconds = Histogram(
            "changesync_event_processing_seconds",
            "Time from a change leaving the driver to its frames being queued for every subscriber.",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=self.registry,
        )

        self._children: dict[tuple[Counter, tuple[str, ...]], Any] = {}

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
