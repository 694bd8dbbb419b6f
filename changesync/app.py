"""The ASGI application: ``create_app(settings)``; run with ``uvicorn --factory changesync.app:create_app``.

The lifespan opens the database, builds the service's parts (``changesync.service``) and runs the
watcher and housekeeping while the app serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route

from .auth import Authenticator
from .check import warn_about_images
from .delivering.housekeeping import ShutdownNotice
from .demo_page import page_routes
from .metrics import Metrics
from .mongo import Database, open_database, unreachable_cause
from .parsers import redact_uri
from .producing.watcher import Watcher
from .service import Service, build_service
from .settings import Settings, load_settings
from .web import (
    HttpGuard,
    State,
    events_schema,
    flow_events,
    healthz,
    http_error,
    internal_error,
    metrics_endpoint,
    publish_event,
    readyz,
)

logger = logging.getLogger(__name__)

# How long start-up waits for the change stream before serving (a client connecting right after
# start-up then misses nothing); an unreachable database only delays readiness.
STARTUP_WAIT_S = 10.0


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the service. Without ``settings``, they are read from ``CHANGESYNC_*`` and the config file."""
    if settings is None:
        settings = load_settings(environ=os.environ, serving=True)
    metrics = Metrics()
    # A JWKS URL is fetched here, before the event loop serves: no keys, no start (ConfigError).
    authenticator = Authenticator(settings.auth, metrics=metrics)
    if not authenticator.enabled:
        logger.warning("authentication is off (auth.mode = none): anyone who can reach the port reads every flow")
    shutdown = ShutdownNotice()
    target = f"{settings.redacted_uri} (database {settings.database!r})"

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        database = open_database(settings.mongodb_uri, settings.database)
        service = build_service(settings, database, metrics=metrics, shutdown=shutdown, target=target)
        if settings.hub.url:
            logger.info("serving %s through the hub at %s", target, redact_uri(settings.hub.url))
        else:
            logger.info("watching %s", target)
        try:
            async with asyncio.TaskGroup() as tasks:
                background: list[asyncio.Task[None]] = [
                    tasks.create_task(run(), name=name) for name, run in service.background.items()
                ]
                if service.watcher is not None:
                    background.append(tasks.create_task(_warn_about_images(service.watcher, database, settings)))
                if (remote_keys := authenticator.remote_keys) is not None:
                    background.append(tasks.create_task(remote_keys.run(), name="changesync-jwks"))
                await _wait_until_serving(service)
                yield State(
                    settings=settings,
                    hub=service.hub,
                    metrics=metrics,
                    status=service.status,
                    joins=service.joins,
                    authenticator=authenticator,
                    authorizer=service.authorizer,
                    event_types=frozenset(route.event_type for route in settings.routes),
                    streams=service.streams,
                    target=target,
                    publisher=service.publisher,
                    publish_rate=service.publish_rate,
                )
                service.hub.broker.close_all("shutdown")
                for task in background:
                    task.cancel()
        finally:
            await database.close()
            if service.redis is not None:
                await service.redis.aclose()

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
    app = Starlette(
        routes=[
            Route("/flows/{flow_id:path}/events", flow_events, methods=["GET"]),
            Route("/flows/{flow_id:path}/events", publish_event, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/schema/events.json", events_schema, methods=["GET"]),
            *(page_routes() if settings.demo_page else []),
        ],
        middleware=middleware,
        exception_handlers={HTTPException: http_error, Exception: internal_error},
        lifespan=lifespan,
    )
    app.state.shutdown = shutdown
    return app


async def _wait_until_serving(service: Service) -> None:
    """Until the service can take clients, for at most ``STARTUP_WAIT_S``; says at once why when
    MongoDB (or, in hub mode, Redis) cannot be reached, and serves meanwhile (``/readyz`` says not
    ready, and why).

    The probe is a ping of its own, bounded by its server selection timeout; it is never cancelled
    (a connection cancelled while it opens is left behind by the driver)."""
    settings = service.settings
    cause = await unreachable_cause(settings.mongodb_uri)
    if cause is not None and service.watcher is not None:
        service.watcher.unreachable(cause)
        return
    if cause is not None:
        logger.error(
            "cannot reach MongoDB at %s: %s; serving anyway and retrying (run `changesync check`)",
            settings.redacted_uri,
            cause,
        )
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(STARTUP_WAIT_S):
            while service.status.refusal() is not None:  # noqa: ASYNC110 - the hub's state has no event to wait on
                await asyncio.sleep(0.05)
    if (refusal := service.status.refusal()) is not None:
        logger.error("not serving clients yet: %s", refusal)


async def _warn_about_images(watcher: Watcher, database: Database, settings: Settings) -> None:
    """Once the stream is open (the database answers), log the routes that lack pre-images."""
    await watcher.wait_started()
    await warn_about_images(database, settings.routes)
