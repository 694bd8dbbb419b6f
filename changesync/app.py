"""The ASGI application: ``create_app(settings)``; run with ``uvicorn --factory changesync.app:create_app``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route

from filters import Pipeline

from .auth import Authenticator, Authorizer, Principal, access_query
from .broadcast import Broker, Delivery, Subscriber, make_compactor
from .check import warn_about_images
from .dispatch import Dispatcher, coalesced_delivery, collapsed_delivery
from .events import RESYNC, position_frame, resync_frame
from .metrics import Metrics
from .replay import ReplayBuffer
from .settings import Settings, load_settings
from .source import ChangeSource, flow_id_values, open_client
from .stream import SHUTDOWN_GRACE_S, OpenStreams, shutdown_requested
from .subscriptions import Subscriptions
from .web import (
    HttpGuard,
    State,
    events_schema,
    flow_events,
    healthz,
    http_error,
    internal_error,
    metrics_endpoint,
    readyz,
)

logger = logging.getLogger(__name__)

# How often the housekeeping task looks for a shutdown request, in seconds.
HOUSEKEEPING_INTERVAL_S = 0.2
# Expired tokens are looked for this often: a scan of every subscriber, so not at every round.
EXPIRY_CHECK_INTERVAL_S = 1.0


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the service. Without ``settings``, they are read from ``CHANGESYNC_*`` and the config file."""
    if settings is None:
        settings = load_settings(environ=os.environ)
    stages = settings.load_stages()
    pipeline = Pipeline(settings.routes, stages=stages)
    authenticator = Authenticator(settings.auth)
    if not authenticator.enabled:
        logger.warning("authentication is off (auth.mode = none): anyone who can reach the port reads every flow")
    metrics = Metrics()
    stream = settings.stream

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        policies = {collection: options.overflow for collection, options in settings.route_options.items()}
        broker = Broker(
            max_queue=stream.client_queue_size,
            compact=make_compactor(policies, coalesced=coalesced_delivery, collapsed=collapsed_delivery),
        )
        replay = ReplayBuffer(per_flow=stream.replay_per_flow, max_bytes=stream.replay_max_bytes)
        dispatcher = Dispatcher.from_settings(
            settings, broker, metrics, replay, history_pipeline=pipeline, stages=stages
        )
        broker.on_overflow = dispatcher.on_overflow
        client = open_client(settings.mongodb_uri)
        source = ChangeSource(
            client[settings.database],
            settings.routes,
            dispatcher,
            on_restart=lambda kind: metrics.stream_restarts.labels(kind=kind).inc(),
            max_await_time_ms=stream.max_await_time_ms,
        )
        authorizer = Authorizer(
            lambda subject, flow_id: source.exists(
                settings.auth.access_collection,
                access_query(settings.auth.access_query, flow_id_values(flow_id), subject),
            ),
            ttl_s=settings.auth.cache_ttl_s,
        )
        subscriptions = Subscriptions(
            broker=broker,
            dispatcher=dispatcher,
            source=source,
            pipeline=pipeline,
            route_options=settings.route_options,
            settings=stream,
        )
        streams = OpenStreams()
        logger.info("watching %s on %s", settings.database, settings.redacted_uri)
        try:
            async with asyncio.TaskGroup() as tasks:
                watcher = tasks.create_task(source.run(), name="changesync-watcher")
                tasks.create_task(warn_about_images(client[settings.database], settings.routes))
                keeper = tasks.create_task(
                    housekeeping(broker, dispatcher, authorizer, settings, streams), name="changesync-housekeeping"
                )
                with contextlib.suppress(TimeoutError):
                    # Start serving once the stream is open, so that a client connecting right after
                    # start-up misses nothing; an unreachable database only delays readiness.
                    await asyncio.wait_for(source.wait_started(), timeout=10)
                yield State(
                    settings=settings,
                    broker=broker,
                    metrics=metrics,
                    source=source,
                    subscriptions=subscriptions,
                    authenticator=authenticator,
                    authorizer=authorizer,
                    event_types=frozenset(route.event_type for route in settings.routes),
                    streams=streams,
                )
                broker.close_all("shutdown")
                watcher.cancel()
                keeper.cancel()
        finally:
            await client.close()

    middleware = [Middleware(HttpGuard)]
    if settings.cors.allow_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors.allow_origins),
                allow_credentials=settings.cors.allow_credentials,
                allow_methods=["GET"],
                allow_headers=["Authorization", "Last-Event-ID"],
                max_age=600,
            )
        )
    return Starlette(
        routes=[
            Route("/flows/{flow_id:path}/events", flow_events, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/schema/events.json", events_schema, methods=["GET"]),
        ],
        middleware=middleware,
        exception_handlers={HTTPException: http_error, Exception: internal_error},
        lifespan=lifespan,
    )


async def housekeeping(
    broker: Broker, dispatcher: Dispatcher, authorizer: Authorizer, settings: Settings, streams: OpenStreams
) -> None:
    """One task for all clients: heartbeats, expired tokens, revoked access, and the farewell on shutdown."""
    stream = settings.stream
    next_heartbeat = time.monotonic() + stream.heartbeat_interval_s
    next_access_check = time.monotonic() + settings.auth.cache_ttl_s
    next_expiry_check = time.monotonic()
    while True:
        await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)
        if shutdown_requested():
            # Clients reconnect (to this instance after a restart, or to another) and resume from here.
            farewell = Delivery(
                "", position_frame(dispatcher.position, comment="shutting down", retry_ms=stream.retry_ms)
            )
            broker.close_all("shutdown", farewell)
            # Live streams end at once; those still busy (a snapshot, a catch-up, a client that
            # stopped reading) are cut off after the grace period, without a farewell.
            await asyncio.sleep(SHUTDOWN_GRACE_S)
            if cut := streams.interrupt_all():
                logger.warning("%d streams did not end within %g s of the shutdown; cut off", cut, SHUTDOWN_GRACE_S)
            return
        now = time.monotonic()
        if now >= next_heartbeat:
            next_heartbeat = now + stream.heartbeat_interval_s
            broker.tick(Delivery("", position_frame(dispatcher.position), dispatcher.position))
        if now >= next_expiry_check:
            next_expiry_check = now + EXPIRY_CHECK_INTERVAL_S
            close_expired(broker, dispatcher)
        if now >= next_access_check:
            next_access_check = now + settings.auth.cache_ttl_s
            await close_revoked(broker, dispatcher, authorizer)


def close_expired(broker: Broker, dispatcher: Dispatcher) -> None:
    """End streams whose token expired; the client reconnects with a fresh one and resumes."""
    now = time.time()
    for subscriber in broker.subscribers():
        if subscriber.expires_at is not None and subscriber.expires_at < now and subscriber.closed_reason is None:
            frame = resync_frame(subscriber.flow_id, "token-expired", retry_ms=dispatcher.retry_ms)
            subscriber.close("token-expired", Delivery(RESYNC, frame))


async def close_revoked(broker: Broker, dispatcher: Dispatcher, authorizer: Authorizer) -> None:
    """Ask again, for every subject and flow with open streams, and end those no longer allowed."""
    pairs: dict[tuple[str, str], list[Subscriber]] = {}
    for subscriber in broker.subscribers():
        if not subscriber.unrestricted and subscriber.closed_reason is None:
            pairs.setdefault((subscriber.subject, subscriber.flow_id), []).append(subscriber)
    for (subject, flow_id), subscribers in pairs.items():
        try:
            allowed = await authorizer.allowed(Principal(subject), flow_id, fresh=True)
        except Exception:
            logger.warning("could not re-check access of a subject to flow %s; keeping its streams", flow_id)
            continue
        if not allowed:
            frame = Delivery(RESYNC, resync_frame(flow_id, "access-revoked"))
            for subscriber in subscribers:
                subscriber.close("access-revoked", frame)
