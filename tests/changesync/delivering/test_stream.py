"""The SSE response (changesync.delivering.stream): headers, HEAD, disconnects, stalled clients, shutdown.

A small Starlette app (``HttpGuard`` + one events route) serves a ``Broker`` without MongoDB.
Streams that end are read through httpx's ASGITransport; endless ones through a real uvicorn
on loopback, with the service's own uvicorn configuration (httptools).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import Route

from changesync.delivering import housekeeping
from changesync.delivering.broadcast import Broker, Subscriber
from changesync.delivering.housekeeping import Housekeeping, ShutdownNotice
from changesync.delivering.stream import EventStream, OpenStreams
from changesync.errors import SendTimeoutError
from changesync.frames import Frame, position_frame, resync_frame
from changesync.settings import load_settings
from changesync.web import SECURITY_HEADERS, HttpGuard
from harness import free_port, serve_app

RETRY_MS = 1000
OPENING = b"retry: 1000\n\n"
# Bound on every wait below; the events awaited normally take milliseconds.
WAIT_S = 5.0

Prologue = Callable[[Subscriber], AsyncGenerator[bytes, None]]


async def opening(subscriber: Subscriber) -> AsyncGenerator[bytes, None]:
    yield OPENING


class Service:
    """A broker, and an app that serves ``GET /flows/{flow_id}/events`` from it."""

    def __init__(self, *, prologue: Prologue = opening, send_timeout_s: float = WAIT_S, max_queue: int = 100) -> None:
        self.broker = Broker(max_queue=max_queue)
        self.streams = OpenStreams()
        self.prologue = prologue
        self.send_timeout_s = send_timeout_s
        self.subscribed = asyncio.Event()
        self.closed: list[Subscriber] = []
        self.closed_event = asyncio.Event()
        self.app = Starlette(
            routes=[Route("/flows/{flow_id:path}/events", self.endpoint, methods=["GET"])],
            middleware=[Middleware(HttpGuard)],
        )

    async def endpoint(self, request: Request) -> EventStream:
        subscriber = self.broker.subscribe(request.path_params["flow_id"])
        self.subscribed.set()
        return EventStream(
            subscriber,
            self.prologue(subscriber),
            send_timeout_s=self.send_timeout_s,
            retry_ms=RETRY_MS,
            on_close=self.close,
            streams=self.streams,
        )

    def close(self, subscriber: Subscriber) -> None:
        self.broker.unsubscribe(subscriber)
        self.closed.append(subscriber)
        self.closed_event.set()

    async def wait_closed(self, timeout_s: float = WAIT_S) -> float:
        """Seconds until the stream's ``on_close`` ran."""
        started = time.monotonic()
        async with asyncio.timeout(timeout_s):
            await self.closed_event.wait()
        return time.monotonic() - started


@contextlib.asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    """Serve ``app`` with the service's uvicorn configuration on loopback; yields the base URL."""
    settings = dataclasses.replace(load_settings(environ={}), host="127.0.0.1", port=free_port())
    async with serve_app(app, settings, lifespan=False):
        yield f"http://127.0.0.1:{settings.port}"


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Poll ``predicate`` (cheap, in memory) until it holds, for at most ``WAIT_S``."""
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def asgi_client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=WAIT_S)


async def farewell_prologue(subscriber: Subscriber) -> AsyncGenerator[bytes, None]:
    """Opens, then queues two frames and a farewell: the stream ends after them."""
    yield OPENING
    subscriber.offer(Frame("a", "T", b"data: 1\n\n"))
    subscriber.offer(Frame("a", "T", b"data: 2\n\n"))
    subscriber.close("test", Frame("a", "", b": bye\n\n"))


class TestResponse:
    async def test_headers(self):
        """The stream carries the SSE headers sse-starlette sent and every security header."""
        service = Service(prologue=farewell_prologue)
        async with asgi_client(service.app) as client:
            response = await client.get("/flows/a/events")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["connection"] == "keep-alive"
        assert response.headers["x-accel-buffering"] == "no"
        for name, value in SECURITY_HEADERS:
            assert response.headers[name.decode()] == value.decode()
        assert "content-length" not in response.headers
        assert response.content == OPENING + b"data: 1\n\ndata: 2\n\n: bye\n\n"
        assert len(service.closed) == 1 and service.broker.subscriber_count == 0

    async def test_head_sends_headers_only_and_closes(self):
        """HEAD gets the same headers and an empty body; the prologue never runs; on_close runs once."""
        started = []

        async def prologue(subscriber: Subscriber) -> AsyncGenerator[bytes, None]:
            started.append(subscriber)
            yield OPENING
            await asyncio.Event().wait()

        service = Service(prologue=prologue)
        async with asgi_client(service.app) as client:
            response = await client.head("/flows/a/events")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.content == b""
        assert started == []
        assert len(service.closed) == 1 and service.broker.subscriber_count == 0
        assert len(service.streams) == 0

    async def test_prologue_then_queued_frames_in_one_write(self):
        """Each prologue chunk is one body message; what was queued meanwhile goes out in one write."""
        service = Service(prologue=farewell_prologue)
        messages: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        subscriber = service.broker.subscribe("a")
        stream = EventStream(
            subscriber,
            farewell_prologue(subscriber),
            send_timeout_s=WAIT_S,
            retry_ms=RETRY_MS,
            on_close=service.close,
            streams=service.streams,
        )
        await stream({"type": "http", "method": "GET"}, receive, send)
        assert [message["type"] for message in messages] == ["http.response.start", *["http.response.body"] * 3]
        assert [message["body"] for message in messages[1:]] == [OPENING, b"data: 1\n\ndata: 2\n\n: bye\n\n", b""]
        assert [message["more_body"] for message in messages[1:]] == [True, True, False]
        assert service.closed == [subscriber]

    async def test_overflow_ends_with_resync(self):
        """A subscriber that overflowed gets RESYNC slow-consumer (with the retry hint) and the stream ends."""

        async def overflowing(subscriber: Subscriber) -> AsyncGenerator[bytes, None]:
            yield OPENING
            for index in range(3):
                subscriber.offer(Frame("a", "T", b"data: %d\n\n" % index))

        service = Service(prologue=overflowing, max_queue=2)
        async with asgi_client(service.app) as client:
            response = await client.get("/flows/a/events")
        assert response.content == OPENING + resync_frame("a", "slow-consumer", retry_ms=RETRY_MS).data
        assert len(service.closed) == 1

    @pytest.mark.parametrize("ending", ["error", "cancelled"])
    async def test_on_close_runs_once_however_it_ends(self, ending):
        """A failing prologue or a cancellation from outside ends the stream; on_close runs exactly once."""
        entered = asyncio.Event()

        async def prologue(subscriber: Subscriber) -> AsyncGenerator[bytes, None]:
            yield OPENING
            entered.set()
            if ending == "error":
                raise RuntimeError("snapshot failed")
            await asyncio.Event().wait()

        service = Service(prologue=prologue)
        subscriber = service.broker.subscribe("a")
        stream = EventStream(
            subscriber,
            prologue(subscriber),
            send_timeout_s=WAIT_S,
            retry_ms=RETRY_MS,
            on_close=service.close,
            streams=service.streams,
        )

        async def receive() -> dict[str, Any]:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            pass

        task = asyncio.create_task(stream({"type": "http", "method": "GET"}, receive, send))
        async with asyncio.timeout(WAIT_S):
            await entered.wait()
        task.cancel()
        with pytest.raises(RuntimeError if ending == "error" else asyncio.CancelledError):
            await task
        assert service.closed == [subscriber]
        assert len(service.streams) == 0


class TestDisconnect:
    @pytest.mark.parametrize("stage", ["live", "prologue"])
    async def test_disconnect_frees_the_subscriber_at_once(self, stage):
        """A client that goes away is unsubscribed within milliseconds, even while the prologue still runs."""
        prologue_closed = asyncio.Event()

        async def prologue(subscriber: Subscriber) -> AsyncGenerator[bytes, None]:
            try:
                yield OPENING
                if stage == "prologue":
                    await asyncio.Event().wait()  # a snapshot that takes forever
            finally:
                prologue_closed.set()

        service = Service(prologue=prologue)
        async with serve(service.app) as base_url, httpx.AsyncClient(timeout=WAIT_S) as client:
            async with client.stream("GET", f"{base_url}/flows/a/events") as response:
                assert (await anext(response.aiter_raw())) == OPENING
                assert service.broker.subscriber_count == 1
            closed_after_s = await service.wait_closed()
            assert service.broker.subscriber_count == 0 and len(service.streams) == 0
            assert prologue_closed.is_set()
        assert closed_after_s < 0.5

    async def test_stalled_client_is_cut_off_after_the_send_timeout(self, caplog):
        """A client that stops reading blocks a send; after send_timeout_s the stream ends with SendTimeoutError."""
        send_timeout_s = 0.5
        service = Service(send_timeout_s=send_timeout_s, max_queue=1000)
        async with serve(service.app) as base_url:
            port = int(base_url.rsplit(":", 1)[1])
            with socket.socket() as stalled:
                stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                stalled.connect(("127.0.0.1", port))
                stalled.sendall(b"GET /flows/a/events HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
                async with asyncio.timeout(WAIT_S):
                    await service.subscribed.wait()
                (subscriber,) = service.broker.subscribers()
                # More than the socket buffers hold: the transport pauses writing, so the next send waits.
                service.broker.publish(Frame("a", "T", b"data: " + b"x" * 16_000_000 + b"\n\n"))
                await until(lambda: subscriber.queued == 0, "the big frame to be handed to the transport")
                blocked_at = time.monotonic()
                service.broker.publish(Frame("a", "T", b"data: next\n\n"))
                await service.wait_closed()
                cut_after_s = time.monotonic() - blocked_at
        assert send_timeout_s <= cut_after_s < send_timeout_s + 1.0
        assert any(isinstance(record.exc_info[1], SendTimeoutError) for record in caplog.records if record.exc_info)
        assert service.broker.subscriber_count == 0


class TestShutdown:
    @pytest.fixture
    def shutdown(self, monkeypatch):
        """The server was told to stop, with a short grace period."""
        monkeypatch.setattr(housekeeping, "SHUTDOWN_GRACE_S", 0.3)
        notice = ShutdownNotice()
        notice.request()
        return notice

    @staticmethod
    def housekeeping_for(service: Service, shutdown: ShutdownNotice) -> asyncio.Task[None]:
        hub = SimpleNamespace(broker=service.broker, position="position-1")
        settings = load_settings(environ={})
        keeper = Housekeeping(
            hub,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            service.streams,
            shutdown,
            heartbeat_interval_s=settings.stream.heartbeat_interval_s,
            access_check_interval_s=settings.auth.cache_ttl_s,
            retry_ms=settings.stream.retry_ms,
        )
        return asyncio.create_task(keeper.run())

    async def test_farewell_on_shutdown(self, shutdown):
        """Housekeeping closes every live stream with an id-only farewell and the stream ends cleanly."""
        service = Service()
        async with serve(service.app) as base_url, httpx.AsyncClient(timeout=WAIT_S) as client:
            async with client.stream("GET", f"{base_url}/flows/a/events") as response:
                chunks = response.aiter_raw()
                assert (await anext(chunks)) == OPENING
                keeper = self.housekeeping_for(service, shutdown)
                rest = b"".join([chunk async for chunk in chunks])  # until the stream ends
            retry_ms = load_settings(environ={}).stream.retry_ms
            assert rest == position_frame("position-1", comment="shutting down", retry_ms=retry_ms).data
            await service.wait_closed()
            async with asyncio.timeout(WAIT_S):
                await keeper
        assert service.broker.subscriber_count == 0 and len(service.streams) == 0

    async def test_busy_stream_is_cut_off_after_the_grace_period(self, shutdown):
        """A stream still in its prologue when the grace period ends is cut off; on_close runs."""
        prologue_closed = asyncio.Event()

        async def prologue(subscriber: Subscriber) -> AsyncGenerator[bytes, None]:
            try:
                yield OPENING
                await asyncio.Event().wait()  # a catch-up that does not finish in time
            finally:
                prologue_closed.set()

        service = Service(prologue=prologue)
        async with serve(service.app) as base_url, httpx.AsyncClient(timeout=WAIT_S) as client:
            async with client.stream("GET", f"{base_url}/flows/a/events") as response:
                chunks = response.aiter_raw()
                assert (await anext(chunks)) == OPENING
                started = time.monotonic()
                keeper = self.housekeeping_for(service, shutdown)
                with pytest.raises(httpx.RemoteProtocolError):  # the response was never completed
                    async for _ in chunks:
                        pass
            cut_after_s = time.monotonic() - started
            await service.wait_closed()
            async with asyncio.timeout(WAIT_S):
                await keeper
            assert prologue_closed.is_set()
        assert 0.3 <= cut_after_s < 0.3 + 0.2 + 1.0  # grace, one housekeeping round, margin
        assert service.broker.subscriber_count == 0 and len(service.streams) == 0
