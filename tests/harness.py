"""The service on a real socket, and an SSE client that records what it receives.

Imported by tests as ``harness`` (``tests/`` is on ``sys.path`` under pytest's default import mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from httpx_sse import aconnect_sse
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import ASGIApp

from changesync.app import create_app
from changesync.check import run_check
from changesync.server import uvicorn_config
from changesync.settings import Settings, load_settings

DEFAULT_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def service_settings(uri: str, database: str, **overrides: Any) -> Settings:
    """Default routes and rules, pointed at the test database, with fast timings and auth off
    (``auth={"mode": "jwt", ...}`` turns it on)."""
    settings = load_settings(environ={})
    sections = {
        "stream": dataclasses.replace(settings.stream, **{"max_await_time_ms": 200, **overrides.pop("stream", {})}),
        "auth": dataclasses.replace(settings.auth, **{"mode": "none", **overrides.pop("auth", {})}),
    }
    for name in ("limits", "cors", "hub", "publish"):
        sections[name] = dataclasses.replace(getattr(settings, name), **overrides.pop(name, {}))
    return dataclasses.replace(settings, mongodb_uri=uri, database=database, port=free_port(), **sections, **overrides)


@dataclass
class RunningService:
    settings: Settings
    server: uvicorn.Server

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    def events_url(self, flow_id: str, **query: str) -> str:
        suffix = "&".join(f"{key}={value}" for key, value in query.items())
        return f"{self.base_url}/flows/{flow_id}/events" + (f"?{suffix}" if suffix else "")


@contextlib.asynccontextmanager
async def serve_app(app: ASGIApp, settings: Settings, *, lifespan: bool = True) -> AsyncIterator[uvicorn.Server]:
    """Serve ``app`` with the service's uvicorn configuration on ``settings.port`` until the block ends."""
    config = uvicorn_config(app, settings)
    config.timeout_graceful_shutdown = 1
    if not lifespan:
        config.lifespan = "off"
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(DEFAULT_TIMEOUT_S):
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("server stopped before it started")
            await asyncio.sleep(0.01)
    try:
        yield server
    finally:
        server.should_exit = True
        async with asyncio.timeout(DEFAULT_TIMEOUT_S):
            await task


@contextlib.asynccontextmanager
async def run_service(settings: Settings, *, enable_images: bool = True) -> AsyncIterator[RunningService]:
    """Serve ``create_app(settings)`` with uvicorn on loopback until the block ends."""
    if enable_images:
        report = await run_check(settings, fix=True)
        assert not report.failed, report.render()
    async with serve_app(create_app(settings), settings) as server:
        yield RunningService(settings, server)


async def metric(service: RunningService, name: str, **labels: str) -> float:
    """The value of one sample on ``/metrics`` (0 when the labelled series does not exist yet)."""
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{service.base_url}/metrics")
    response.raise_for_status()
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def visible(document: dict[str, Any]) -> dict[str, Any]:
    """What the default rules let through for a canvas document."""
    document = copy.deepcopy(document)
    document.pop("secrets", None)
    for key in [key for key in document if key.startswith("_") and key != "_id"]:
        del document[key]
    for node in document.get("nodes", []):
        if isinstance(node, dict):
            node.get("data", {}).pop("credentials", None)
    return document


@dataclass(frozen=True)
class Event:
    event: str
    id: str
    data: dict[str, Any]


class EventStream:
    """Reads one SSE stream in the background; ``await next()`` returns events in order."""

    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None) -> None:
        self.url = url
        self.headers = dict(headers or {})
        self.raw: list[str] = []
        self.last_id: str | None = None
        """The last event id seen, as a browser's EventSource keeps it (id-only messages included)."""
        self.first_id: str | None = None
        """The id of the first event received."""
        self.status_code: int | None = None
        self.error_body: dict[str, Any] | None = None
        self._queue: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(DEFAULT_TIMEOUT_S, read=None))
        self._task: asyncio.Task[None] | None = None
        self._opened = asyncio.Event()

    async def __aenter__(self) -> EventStream:
        self._task = asyncio.create_task(self._read())
        async with asyncio.timeout(DEFAULT_TIMEOUT_S):
            await self._opened.wait()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._client.aclose()

    async def _read(self) -> None:
        try:
            async with aconnect_sse(self._client, "GET", self.url, headers=self.headers) as source:
                self.status_code = source.response.status_code
                if self.status_code != 200:
                    self.error_body = json.loads(await source.response.aread())
                    self._opened.set()
                    return
                self._opened.set()
                async for message in source.aiter_sse():
                    if message.id:
                        self.last_id = message.id
                        if self.first_id is None and message.data:
                            self.first_id = message.id
                    if not message.data:
                        # A block without data (the retry hint, an id-only heartbeat) dispatches no
                        # event in a browser's EventSource.
                        continue
                    self.raw.append(message.data)
                    data = json.loads(message.data) if message.data else {}
                    await self._queue.put(Event(message.event, message.id, data))
            await self._queue.put(None)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._opened.set()
            await self._queue.put(exc)

    async def next(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> Event:
        async with asyncio.timeout(timeout_s):
            item = await self._queue.get()
        if item is None:
            raise EOFError("the stream ended")
        if isinstance(item, BaseException):
            raise item
        return item

    async def until_end(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[Event]:
        """Every event until the server ends the stream."""
        events = []
        while True:
            try:
                events.append(await self.next(timeout_s))
            except EOFError:
                return events


@dataclass
class ServiceProcess:
    """``python -m changesync serve`` as a separate process, for signal and crash tests."""

    uri: str
    database: str
    port: int = dataclasses.field(default_factory=free_port)
    environ: dict[str, str] = dataclasses.field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def events_url(self, flow_id: str, **query: str) -> str:
        suffix = "&".join(f"{key}={value}" for key, value in query.items())
        return f"{self.base_url}/flows/{flow_id}/events" + (f"?{suffix}" if suffix else "")

    async def start(self) -> None:
        environ = {key: value for key, value in os.environ.items() if not key.startswith("CHANGESYNC_")}
        environ.update(
            CHANGESYNC_MONGODB_URI=self.uri,
            CHANGESYNC_DATABASE=self.database,
            CHANGESYNC_PORT=str(self.port),
            CHANGESYNC_LOG_FORMAT="json",
            CHANGESYNC_AUTH_MODE="none",
        )
        environ.update(self.environ)
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "changesync",
            "serve",
            env=environ,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with httpx.AsyncClient() as client, asyncio.timeout(DEFAULT_TIMEOUT_S * 2):
            while True:
                if self.process.returncode is not None:
                    raise RuntimeError(f"changesync serve exited with {self.process.returncode}")
                try:
                    if (await client.get(f"{self.base_url}/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)

    def signal(self, number: int) -> None:
        assert self.process is not None
        self.process.send_signal(number)

    async def wait(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> int:
        assert self.process is not None
        async with asyncio.timeout(timeout_s):
            return await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


StartProcess = Callable[..., Awaitable[ServiceProcess]]


@contextlib.asynccontextmanager
async def service_processes(uri: str, database: str, environ: Mapping[str, str]) -> AsyncIterator[StartProcess]:
    """Yield ``start(port=None, extra=None) -> ServiceProcess``, started and ready, for a database that
    ``changesync check --fix`` prepared; every process still running is killed at the end. ``port``
    restarts one on the same address; ``extra`` adds to ``environ``."""
    report = await run_check(service_settings(uri, database), fix=True)
    assert not report.failed, report.render()
    started: list[ServiceProcess] = []

    async def start(port: int | None = None, extra: Mapping[str, str] | None = None) -> ServiceProcess:
        process = ServiceProcess(uri, database, environ={**environ, **(extra or {})})
        if port is not None:
            process.port = port
        started.append(process)
        await process.start()
        return process

    try:
        yield start
    finally:
        for process in started:
            await process.stop()
