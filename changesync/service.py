"""The parts of one changesync process, wired in the order a change travels.

The watcher (source) → the producer (convert, filter, encode) → the hub → the broker's
subscribers → each client's ``EventStream``. Joins (replay, catch-up, snapshot) and housekeeping
work on the delivering side of the hub. ``create_app`` runs these parts; tests also run them on
an in-memory stand-in for the database.
"""

from __future__ import annotations

from dataclasses import dataclass

from filters import Pipeline

from .auth import Authorizer
from .delivering.broadcast import Broker, SlowConsumers, make_compactor
from .delivering.housekeeping import Housekeeping, ShutdownNotice
from .delivering.joins import Joins
from .delivering.snapshot import Snapshots
from .delivering.stream import OpenStreams
from .hub.local import LocalHub
from .hub.replay import ReplayBuffer
from .metrics import Metrics
from .mongo import Database
from .producing.history import History
from .producing.producer import Producer, build_producer
from .producing.publishing import EventPublisher, RateLimiter
from .producing.watcher import Watcher
from .queries import access_query
from .settings import Settings


@dataclass(slots=True)
class Service:
    settings: Settings
    metrics: Metrics
    hub: LocalHub
    producer: Producer
    watcher: Watcher
    joins: Joins
    authorizer: Authorizer
    streams: OpenStreams
    housekeeping: Housekeeping
    publisher: EventPublisher
    publish_rate: RateLimiter


def build_service(
    settings: Settings,
    database: Database,
    *,
    metrics: Metrics | None = None,
    shutdown: ShutdownNotice | None = None,
    target: str = "",
) -> Service:
    metrics = Metrics() if metrics is None else metrics
    stream = settings.stream
    stages = settings.load_stages()
    # History and snapshots filter with a pipeline that keeps nothing between documents.
    pipeline = Pipeline(settings.routes, stages=stages)
    policies = {collection: options.overflow for collection, options in settings.route_options.items()}
    broker = Broker(
        max_queue=stream.client_queue_size, compact=make_compactor(policies), on_overflow=SlowConsumers(metrics).cut
    )
    hub = LocalHub(broker, ReplayBuffer(per_flow=stream.replay_per_flow, max_bytes=stream.replay_max_bytes), metrics)
    producer = build_producer(settings, hub, metrics, stages=stages)
    watcher = Watcher(
        database,
        settings.routes,
        producer,
        target=target,
        on_restart=lambda kind: metrics.stream_restarts.labels(kind=kind).inc(),
        max_await_time_ms=stream.max_await_time_ms,
    )
    history = History(
        database,
        settings.routes,
        pipeline,
        metrics,
        max_await_time_ms=stream.max_await_time_ms,
        max_event_bytes=settings.limits.max_event_bytes,
    )
    snapshots = Snapshots(database, pipeline, settings.route_options, hub, timeout_s=stream.snapshot_timeout_s)
    joins = Joins(
        hub,
        history,
        snapshots,
        snapshot_on_connect=stream.snapshot_on_connect,
        catch_up_timeout_s=stream.catch_up_timeout_s,
        publishable=frozenset(settings.publish.event_types),
    )
    auth = settings.auth
    authorizer = Authorizer(
        lambda subject, flow_id: database.exists(
            auth.access_collection, access_query(auth.access_query, flow_id, subject)
        ),
        ttl_s=auth.cache_ttl_s,
    )
    streams = OpenStreams()
    housekeeping = Housekeeping(
        hub,
        authorizer,
        streams,
        ShutdownNotice() if shutdown is None else shutdown,
        heartbeat_interval_s=stream.heartbeat_interval_s,
        access_check_interval_s=auth.cache_ttl_s,
        retry_ms=stream.retry_ms,
    )
    publisher = EventPublisher(
        pipeline,
        hub,
        metrics,
        event_types=settings.publish.event_types,
        max_event_bytes=settings.limits.max_event_bytes,
    )
    return Service(
        settings,
        metrics,
        hub,
        producer,
        watcher,
        joins,
        authorizer,
        streams,
        housekeeping,
        publisher,
        RateLimiter(settings.publish.rate_per_s),
    )
