"""The parts of one changesync process, wired in the order a change travels.

The watcher (source) → the producer (convert, filter, encode) → the hub → the broker's
subscribers → each client's ``EventStream``. Joins (replay, catch-up, snapshot) and housekeeping
work on the delivering side of the hub. ``create_app`` runs these parts; tests also run them on
an in-memory stand-in for the database.

Without ``hub.url`` the hub is ``LocalHub`` and this process's watcher publishes to it. With it,
the hub is ``RedisHub`` (this process as an edge) and a ``Leader`` runs the deployment's one
watcher here while this process holds the lease.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from filters import Pipeline

from .auth import Authorizer
from .delivering.broadcast import Broker, SlowConsumers, make_compactor
from .delivering.housekeeping import Housekeeping, ShutdownNotice
from .delivering.joins import Joins
from .delivering.snapshot import Snapshots
from .delivering.stream import OpenStreams
from .hub import Hub
from .hub.edge import RedisHub
from .hub.ingest import IngestReader
from .hub.keys import Keys
from .hub.leader import RECORD_TTL_FACTOR, Leader
from .hub.local import LocalHub
from .hub.replay import ReplayBuffer
from .metrics import Metrics
from .mongo import Database
from .producing.history import History
from .producing.producer import build_producer
from .producing.publishing import EventPublisher, RateLimiter
from .producing.watcher import Watcher
from .queries import access_query
from .settings import Settings
from .status import DatabaseProbe, HubStatus, LocalStatus, Status

# The hub's connection to Redis: fail fast when it is away, and notice a dead one.
REDIS_CONNECT_TIMEOUT_S = 2.0
REDIS_HEALTH_CHECK_S = 10


@dataclass(slots=True)
class Service:
    settings: Settings
    metrics: Metrics
    hub: Hub
    joins: Joins
    authorizer: Authorizer
    streams: OpenStreams
    housekeeping: Housekeeping
    publisher: EventPublisher
    publish_rate: RateLimiter
    status: Status
    watcher: Watcher | None
    """This process's watcher, without a hub (with one, the leader's changes hands)."""
    background: dict[str, Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=dict)
    """The tasks to run while the service serves, by name."""
    redis: Redis | None = None


def open_redis(url: str) -> Redis:
    return Redis.from_url(
        url,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
        socket_keepalive=True,
        health_check_interval=REDIS_HEALTH_CHECK_S,
    )


def build_service(
    settings: Settings,
    database: Database,
    *,
    metrics: Metrics | None = None,
    shutdown: ShutdownNotice | None = None,
    target: str = "",
    redis: Redis | None = None,
) -> Service:
    """The service's parts; ``redis`` (hub mode) defaults to a client for ``hub.url``."""
    metrics = Metrics() if metrics is None else metrics
    stream = settings.stream
    stages = settings.load_stages()
    # History and snapshots filter with a pipeline that keeps nothing between documents.
    pipeline = Pipeline(settings.routes, stages=stages)
    policies = {collection: options.overflow for collection, options in settings.route_options.items()}
    broker = Broker(
        max_queue=stream.client_queue_size, compact=make_compactor(policies), on_overflow=SlowConsumers(metrics).cut
    )
    hub: Hub
    status: Status
    background: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {}
    watcher = None
    edge: RedisHub | None = None
    if settings.hub.url:
        redis = open_redis(settings.hub.url) if redis is None else redis
        history_ttl_ms = int(settings.hub.history_ttl_s * 1000)
        hub = edge = RedisHub(
            redis,
            Keys.for_database(settings.database),
            broker,
            metrics,
            history_per_flow=settings.hub.history_per_flow,
            history_ttl_ms=history_ttl_ms,
            record_ttl_ms=history_ttl_ms * RECORD_TTL_FACTOR,
            retry_ms=stream.retry_ms,
        )
    else:
        local = LocalHub(
            broker, ReplayBuffer(per_flow=stream.replay_per_flow, max_bytes=stream.replay_max_bytes), metrics
        )
        producer = build_producer(settings, local, metrics, stages=stages)
        watcher = Watcher(
            database,
            settings.routes,
            producer,
            target=target,
            on_restart=lambda kind: metrics.stream_restarts.labels(kind=kind).inc(),
            max_await_time_ms=stream.max_await_time_ms,
        )
        hub, status = local, LocalStatus(watcher, settings, target=target)
        background = {"changesync-watcher": watcher.run}
    publisher = EventPublisher(
        pipeline,
        hub,
        metrics,
        event_types=settings.publish.event_types,
        max_event_bytes=settings.limits.max_event_bytes,
    )
    if edge is not None and redis is not None:
        ingest = IngestReader(redis, edge.keys, publisher, edge) if publisher.enabled else None
        leader = Leader(redis, edge.keys, database, settings, metrics, target=target, ingest=ingest)
        probe = DatabaseProbe(database)
        status = HubStatus(edge, leader, probe, settings, target=target)
        background = {"changesync-hub": edge.run, "changesync-leader": leader.run, "changesync-probe": probe.run}
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
        metrics=metrics,
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
        metrics=metrics,
    )
    background["changesync-housekeeping"] = housekeeping.run
    return Service(
        settings,
        metrics,
        hub,
        joins,
        authorizer,
        streams,
        housekeeping,
        publisher,
        RateLimiter(settings.publish.rate_per_s),
        status,
        watcher,
        background,
        redis if settings.hub.url else None,
    )
