"""The servers under test, each run as its own process by the benchmarks (pinned to the server core).

    python -m benchmarks.serve changesync --mongodb-uri URI --database DB --port P [--heartbeat-s S] [--trace]
    python -m benchmarks.serve changesync ... --hub-url redis://127.0.0.1:PORT/0 [--without-hiredis]
    python -m benchmarks.serve naive --mongodb-uri URI --database DB --port P

``changesync`` serves ``create_app(settings)`` under uvicorn on 127.0.0.1 with the default routes,
``auth.mode = none`` (when the settings have it), pre-images enabled (``run_check(fix=True)``, as
the test harness does) and the uvicorn configuration of ``changesync serve``. ``naive`` serves
``benchmarks.naive_app`` with uvicorn's defaults.

``--hub-url`` sets ``hub.url``: the process joins that hub's deployment (the watcher while it holds
the lease, an edge otherwise). ``--without-hiredis`` makes ``import hiredis`` fail in this process,
so that redis-py uses its pure-Python parser even where the ``hiredis`` package is installed.

``--trace`` measures what the metrics cannot: for every change, from the moment it leaves the
driver (``Producer.on_change`` is entered) to the moment its frame was handed to the transport of
the first and of the last subscriber (the ASGI ``send`` of the body that carries its ``id:`` returned).
It wraps ``Producer.on_change`` and the ASGI app in this process only; nothing in the service
changes. ``GET /_bench/trace?reset=1`` starts a measurement, ``GET /_bench/trace`` reports it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import gc
import itertools
import json
import re
import sys
import time
import tracemalloc
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# uvicorn's accept backlog: thousands of clients connect at once (the kernel caps it at somaxconn).
BACKLOG = 8192
SCALAR_ENV_PREFIX = "CHANGESYNC_"
# A frame's id is "<position>~<epoch>.<seq>"; the trace keys events by the position (before "~").
EVENT_ID = re.compile(rb"\nid: ([^\n~]*)")


def changesync_settings(
    uri: str,
    database: str,
    port: int,
    *,
    heartbeat_s: float | None = None,
    max_connections: int | None = None,
    hub_url: str | None = None,
) -> Any:
    """Default routes and rules, auth off, pointed at the benchmark database (and hub, if given)."""
    from changesync import settings as settings_module

    wanted = {"auth.mode": "none"}
    if max_connections is not None:
        wanted["limits.max_connections"] = str(max_connections)
    if hub_url is not None:
        wanted["hub.url"] = hub_url
    known = getattr(settings_module, "DECLARATIONS", None) or getattr(settings_module, "SCALARS", {})
    environ = {
        SCALAR_ENV_PREFIX + key.replace(".", "_").upper(): value for key, value in wanted.items() if key in known
    }
    settings = settings_module.load_settings(environ=environ)
    auth = getattr(settings, "auth", None)
    if auth is not None and getattr(auth, "mode", "none") != "none":
        settings = dataclasses.replace(settings, auth=dataclasses.replace(auth, mode="none"))
    stream = settings.stream
    if heartbeat_s is not None:
        stream = dataclasses.replace(stream, heartbeat_interval_s=heartbeat_s)
    return dataclasses.replace(settings, mongodb_uri=uri, database=database, port=port, stream=stream)


class DeliveryTrace:
    """Driver → transport times per change, keyed by the frame id (the encoded resume token)."""

    def __init__(self) -> None:
        self.driver_ns: dict[bytes, int] = {}
        self.on_change_ns: list[int] = []
        self.first_ns: dict[bytes, int] = {}
        self.last_ns: dict[bytes, int] = {}
        self.sends: collections.Counter[bytes] = collections.Counter()

    def reset(self) -> None:
        for table in (self.driver_ns, self.first_ns, self.last_ns, self.sends):
            table.clear()
        self.on_change_ns.clear()

    def install(self) -> None:
        from changesync.codec import encode_token
        from changesync.producing.producer import Producer

        original = Producer.on_change
        trace = self

        def on_change(producer: Any, change: Any) -> None:
            started = time.perf_counter_ns()
            original(producer, change)
            trace.on_change_ns.append(time.perf_counter_ns() - started)
            trace.driver_ns[encode_token(change["_id"]).encode("ascii")] = started

        Producer.on_change = on_change  # type: ignore[method-assign]

    def record(self, body: bytes, now: int) -> None:
        ids = EVENT_ID.findall(body)
        if len(ids) == 1:
            key = ids[0]
            if key not in self.first_ns:
                self.first_ns[key] = now
            self.last_ns[key] = now
            self.sends[key] += 1
            return
        first = self.first_ns
        for key in ids:
            if key not in first:
                first[key] = now
        self.last_ns.update(zip(ids, itertools.repeat(now)))
        self.sends.update(ids)

    def report(self) -> dict[str, Any]:
        from ._common import summarize_ns

        to_first, to_last, sends = [], [], []
        for key, driver in self.driver_ns.items():
            if key in self.last_ns:
                to_first.append(self.first_ns[key] - driver)
                to_last.append(self.last_ns[key] - driver)
                sends.append(self.sends[key])
        return {
            "events": len(self.driver_ns),
            "events_delivered": len(to_last),
            "mean_subscribers_per_event": round(sum(sends) / len(sends), 1) if sends else 0,
            "on_change": summarize_ns(list(self.on_change_ns)),
            "driver_to_first_subscriber": summarize_ns(to_first),
            "driver_to_last_subscriber": summarize_ns(to_last),
        }


def memory_top(limit: int = 25) -> dict[str, Any]:
    """Live allocations by source line (needs ``--tracemalloc``), biggest first."""
    if not tracemalloc.is_tracing():
        return {"error": "start the server with --tracemalloc"}
    gc.collect()
    snapshot = tracemalloc.take_snapshot()
    statistics = snapshot.statistics("lineno")
    total = sum(stat.size for stat in statistics)
    return {
        "total_mb": round(total / 1e6, 1),
        "top": [
            {"where": str(stat.traceback[0]), "kb": round(stat.size / 1e3, 1), "blocks": stat.count}
            for stat in statistics[:limit]
        ],
    }


def traced(app: ASGIApp, trace: DeliveryTrace | None) -> ASGIApp:
    async def respond(send: Send, body: bytes) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        if scope["path"] == "/_bench/memory":
            await respond(send, json.dumps(memory_top()).encode())
            return
        if scope["path"] == "/_bench/trace":
            if trace is None:
                await respond(send, b"{}")
            elif b"reset=1" in scope.get("query_string", b""):
                trace.reset()
                await respond(send, b"{}")
            else:
                await respond(send, json.dumps(trace.report()).encode())
            return

        if trace is None:
            await app(scope, receive, send)
            return

        async def traced_send(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body":
                body = message.get("body", b"")
                if body.startswith(b"event: "):
                    trace.record(body, time.perf_counter_ns())

        await app(scope, receive, traced_send)

    return wrapper


def plain_config(app: ASGIApp, port: int) -> uvicorn.Config:
    """uvicorn's defaults, as a tutorial runs it (the naive design)."""
    return uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        backlog=BACKLOG,
        timeout_graceful_shutdown=2,
    )


def service_config(app: ASGIApp, settings: Any) -> uvicorn.Config:
    """The uvicorn configuration ``changesync serve`` uses (``changesync.server.uvicorn_config``, and its
    garbage-collection thresholds), when there is one: the benchmark measures the service as deployed.
    Plus a deep accept backlog."""
    try:
        from changesync.server import tune_garbage_collection, uvicorn_config
    except ImportError:
        config = plain_config(app, settings.port)
    else:
        config = uvicorn_config(app, settings)
        tune_garbage_collection()
    config.host = "127.0.0.1"
    config.backlog = BACKLOG
    config.access_log = False
    config.log_config = None
    return config


def changesync_app(args: argparse.Namespace) -> uvicorn.Config:
    from changesync.app import create_app
    from changesync.check import run_check

    settings = changesync_settings(
        args.mongodb_uri,
        args.database,
        args.port,
        heartbeat_s=args.heartbeat_s,
        max_connections=args.max_connections,
        hub_url=args.hub_url,
    )
    if args.hub_url and not settings.hub.url:
        raise SystemExit("this version of changesync has no hub mode (hub.url)")
    report = asyncio.run(run_check(settings, fix=True))
    if report.failed:
        raise SystemExit(f"changesync check failed:\n{report.render()}")
    if args.tracemalloc:
        tracemalloc.start()
    app: ASGIApp = create_app(settings)
    if args.trace:
        trace = DeliveryTrace()
        trace.install()
        app = traced(app, trace)
    elif args.tracemalloc:
        app = traced(app, None)
    return service_config(app, settings)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve")
    parser.add_argument("system", choices=["changesync", "naive"])
    parser.add_argument("--mongodb-uri", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--heartbeat-s", type=float, default=None)
    parser.add_argument("--max-connections", type=int, default=None)
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--hub-url", default=None)
    parser.add_argument("--without-hiredis", action="store_true")
    args = parser.parse_args(argv)
    if args.without_hiredis:
        # A None entry makes the import fail: redis-py then falls back to its own parser.
        sys.modules["hiredis"] = None  # type: ignore[assignment]
    from ._common import raise_fd_limit

    raise_fd_limit(1 << 20)
    if args.system == "changesync":
        config = changesync_app(args)
    else:
        from .naive_app import create_naive_app

        config = plain_config(create_naive_app(args.mongodb_uri, args.database), args.port)
    # Server.run picks the event loop as uvicorn does in production (uvloop when installed).
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
