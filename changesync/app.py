"""The ASGI application: ``create_app(settings)``; run with ``uvicorn --factory changesync.app:create_app``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator
from typing import Any, TypedDict

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from filters import Pipeline

from .broadcast import Broker, Delivery, Subscriber, make_compactor
from .check import warn_about_images
from .dispatch import Dispatcher, coalesced_delivery, collapsed_delivery
from .events import position_frame
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .replay import ReplayBuffer
from .settings import Settings, StreamSettings, load_settings
from .source import ChangeSource, open_client
from .stream import event_stream, shutdown_requested
from .subscriptions import Join, Subscriptions, opening_frame

logger = logging.getLogger(__name__)

FLOW_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:~-]{1,256}")
# Our ids are a few hundred characters; anything far longer is not one of ours.
MAX_EVENT_ID_LENGTH = 4096
# How often the housekeeping task looks for a shutdown request, in seconds.
HOUSEKEEPING_INTERVAL_S = 0.2
# Readiness also fails when the stream has not polled for this many await periods.
STALL_FACTOR = 5
MINIMUM_STALL_S = 5.0


class State(TypedDict):
    settings: Settings
    broker: Broker
    metrics: Metrics
    source: ChangeSource
    subscriptions: Subscriptions
    event_types: frozenset[str]


def error(status_code: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status_code)


def _flag(value: str | None) -> bool | None:
    if value is None:
        return None
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ValueError(value)


async def flow_events(request: Request) -> Response:
    state: State = request.scope["state"]
    flow_id = request.path_params["flow_id"]
    if not FLOW_ID_PATTERN.fullmatch(flow_id):
        return error(400, "invalid flow id", expected="1-256 characters of A-Z a-z 0-9 _ . : ~ -")
    types: frozenset[str] | None = None
    if "types" in request.query_params:
        types = frozenset(name.strip() for name in request.query_params["types"].split(",") if name.strip())
        unknown = sorted(types - state["event_types"])
        if unknown or not types:
            return error(400, "unknown event type", unknown=unknown, known=sorted(state["event_types"]))
    try:
        snapshot = _flag(request.query_params.get("snapshot"))
    except ValueError:
        return error(400, "invalid snapshot flag", expected="true or false")
    last_event_id = request.headers.get("last-event-id") or request.query_params.get("lastEventId")
    if last_event_id is not None and len(last_event_id) > MAX_EVENT_ID_LENGTH:
        return error(400, "invalid last event id", expected=f"at most {MAX_EVENT_ID_LENGTH} characters")
    if not state["source"].started:
        return error(503, "change stream not open yet", retry_after_s=1)

    broker, metrics, stream = state["broker"], state["metrics"], state["settings"].stream
    subscriber, plan = state["subscriptions"].join(
        Join(flow_id, types=types, last_event_id=last_event_id, snapshot=snapshot)
    )
    metrics.clients_connected.inc()

    def closed(subscriber: Subscriber) -> None:
        broker.unsubscribe(subscriber)
        metrics.clients_connected.dec()

    async def prologue() -> AsyncIterator[bytes]:
        yield opening_frame(stream.retry_ms)
        async for data in state["subscriptions"].prologue(subscriber, plan):
            yield data

    return event_stream(
        subscriber, prologue(), send_timeout_s=stream.send_timeout_s, retry_ms=stream.retry_ms, on_close=closed
    )


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    state: State = request.scope["state"]
    source, settings = state["source"], state["settings"]
    stall_s = max(MINIMUM_STALL_S, STALL_FACTOR * settings.stream.max_await_time_ms / 1000)
    since_poll_s = time.monotonic() - source.state.last_poll_monotonic
    checks = {
        "changeStreamOpen": source.state.open,
        "polling": source.state.open and since_poll_s < stall_s,
        "lagUnderBound": source.state.lag_s < settings.stream.ready_max_lag_s,
    }
    body = {
        "status": "ready" if all(checks.values()) else "not-ready",
        "checks": checks,
        "lagSeconds": source.state.lag_s,
    }
    if source.state.last_error:
        body["lastError"] = source.state.last_error
    return JSONResponse(body, status_code=200 if all(checks.values()) else 503)


async def metrics_endpoint(request: Request) -> Response:
    state: State = request.scope["state"]
    state["metrics"].stream_lag_seconds.set(state["source"].state.lag_s)
    return Response(state["metrics"].render(), media_type=CONTENT_TYPE_LATEST)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, exc.detail)


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the service. Without ``settings``, they are read from ``CHANGESYNC_*`` and the config file."""
    if settings is None:
        settings = load_settings(environ=os.environ)
    pipeline = Pipeline(settings.routes, stages=settings.load_stages())
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
        dispatcher = Dispatcher(pipeline, broker, metrics, replay, retry_ms=stream.retry_ms)
        broker.on_overflow = dispatcher.on_overflow
        client = open_client(settings.mongodb_uri)
        source = ChangeSource(
            client[settings.database],
            settings.routes,
            dispatcher,
            on_restart=lambda kind: metrics.stream_restarts.labels(kind=kind).inc(),
            max_await_time_ms=stream.max_await_time_ms,
        )
        subscriptions = Subscriptions(
            broker=broker,
            dispatcher=dispatcher,
            source=source,
            pipeline=pipeline,
            routes=pipeline.routes,
            route_options=settings.route_options,
            settings=stream,
        )
        logger.info("watching %s on %s", settings.database, settings.redacted_uri)
        try:
            async with asyncio.TaskGroup() as tasks:
                watcher = tasks.create_task(source.run(), name="changesync-watcher")
                tasks.create_task(warn_about_images(client[settings.database], settings.routes))
                keeper = tasks.create_task(housekeeping(broker, dispatcher, stream), name="changesync-housekeeping")
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
                    event_types=frozenset(route.event_type for route in settings.routes),
                )
                broker.close_all("shutdown")
                watcher.cancel()
                keeper.cancel()
        finally:
            await client.close()

    return Starlette(
        routes=[
            Route("/flows/{flow_id:path}/events", flow_events),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )


async def housekeeping(broker: Broker, dispatcher: Dispatcher, stream: StreamSettings) -> None:
    """Heartbeats for idle clients (one timer for all of them) and the farewell on shutdown."""
    next_heartbeat = time.monotonic() + stream.heartbeat_interval_s
    while True:
        await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)
        if shutdown_requested():
            # Clients reconnect (to this instance after a restart, or to another) and resume from here.
            farewell = Delivery(
                "", position_frame(dispatcher.position, comment="shutting down", retry_ms=stream.retry_ms)
            )
            broker.close_all("shutdown", farewell)
            return
        now = time.monotonic()
        if now >= next_heartbeat:
            next_heartbeat = now + stream.heartbeat_interval_s
            broker.tick(Delivery("", position_frame(dispatcher.position), dispatcher.position))
