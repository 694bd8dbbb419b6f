"""The uvicorn protocol (changesync.server): the first head's deadline and the bound on incomplete request data.

Raw requests over loopback to a real uvicorn with the service's configuration, serving a small ASGI app
that answers with what it received.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from changesync.server import (
    FEED_BYTES,
    GC_THRESHOLDS,
    INVALID_REQUEST,
    MAX_REQUEST_HEAD_BYTES,
    GuardedHttpToolsProtocol,
    tune_garbage_collection,
    uvicorn_config,
)
from changesync.settings import load_settings
from harness import free_port, serve_app

# Bound on every wait below; the answers awaited normally take milliseconds.
WAIT_S = 5.0
# The head deadline of the tests that time it; the others use WAIT_S * 2, so that it never interferes.
DEADLINE_S = 0.5
REQUEST = b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n"
# A request head that never ends: the target line and a header whose value the test goes on sending.
OPEN_HEAD = b"GET /plain HTTP/1.1\r\nHost: x\r\nX-Padding: "
CHUNKED_HEAD = b"GET /plain HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
# Refused once all of it has been read, so that the server's close is a FIN, not a reset for unread data.
TOO_LONG_HEAD = OPEN_HEAD.ljust(MAX_REQUEST_HEAD_BYTES + 1, b"a")
REFUSAL = b"HTTP/1.1 400 Bad Request\r\n"


class Recorder:
    """Answers each request with its path, header names and body size; ``/stream`` stays open until
    released, ``/hold`` starts its answer only when released, ``/early`` answers without reading the body."""

    def __init__(self) -> None:
        self.streaming = asyncio.Event()
        self.holding = asyncio.Event()
        self.release = asyncio.Event()
        self.body_started = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        if scope["path"] == "/hold":
            self.holding.set()
            await self.release.wait()
        if scope["path"] == "/early":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"3")]})
            await send({"type": "http.response.body", "body": b"ok\n"})
            return
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"open\n", "more_body": True})
            self.streaming.set()
            await self.release.wait()
            await send({"type": "http.response.body", "body": b"done\n"})
            return
        body = b""
        more_body = True
        while more_body:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message["body"]
            more_body = message["more_body"]
            if body and more_body:
                self.body_started.set()
        answer = json.dumps(
            {"path": scope["path"], "headers": [name.decode() for name, _ in scope["headers"]], "body_bytes": len(body)}
        ).encode()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(answer)).encode())]}
        )
        await send({"type": "http.response.body", "body": answer})


@dataclasses.dataclass
class Served:
    port: int
    app: Recorder

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            yield reader, writer
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    """Factory: a Recorder served with ``uvicorn_config`` on a free port, until the test ends."""
    async with contextlib.AsyncExitStack() as stack:

        async def create(*, request_head_timeout_s: float = WAIT_S * 2) -> Served:
            settings = load_settings(environ={})
            limits = dataclasses.replace(settings.limits, request_head_timeout_s=request_head_timeout_s)
            settings = dataclasses.replace(settings, host="127.0.0.1", port=free_port(), limits=limits)
            app = Recorder()
            await stack.enter_async_context(serve_app(app, settings, lifespan=False))
            return Served(settings.port, app)

        yield create


async def read_answer(reader: asyncio.StreamReader) -> dict[str, Any]:
    """One 200 response with a Content-Length body: the Recorder's answer."""
    async with asyncio.timeout(WAIT_S):
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:-2])
        answer: dict[str, Any] = json.loads(await reader.readexactly(int(fields[b"content-length"])))
        return answer


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    async with asyncio.timeout(WAIT_S):
        return await reader.read()


async def send_in_pieces(writer: asyncio.StreamWriter, data: bytes, *, piece_bytes: int, pause_s: float = 0) -> None:
    for start in range(0, len(data), piece_bytes):
        writer.write(data[start : start + piece_bytes])
        await writer.drain()
        await asyncio.sleep(pause_s)


async def trickle_until_closed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> tuple[bytes, float]:
    """Send ``data`` a byte every 50 ms until the server closes; what it sent, and after how long."""
    started = time.monotonic()
    trickle = asyncio.create_task(send_in_pieces(writer, data, piece_bytes=1, pause_s=0.05))
    try:
        received = await read_to_end(reader)
    finally:
        trickle.cancel()
    return received, time.monotonic() - started


def assert_refused(received: bytes) -> None:
    assert received.startswith(REFUSAL), received[:200]
    assert received.endswith(INVALID_REQUEST.encode())


class TestConfig:
    def test_uvicorn_serves_the_guarded_httptools_protocol(self):
        """uvicorn_config selects GuardedHttpToolsProtocol, with the configured head deadline."""
        settings = load_settings(environ={})
        settings = dataclasses.replace(
            settings, limits=dataclasses.replace(settings.limits, request_head_timeout_s=3.0)
        )
        config = uvicorn_config(Recorder(), settings)
        assert isinstance(config.http, type) and issubclass(config.http, GuardedHttpToolsProtocol)
        assert config.http.request_head_timeout_s == 3.0

    def test_the_service_tunes_garbage_collection(self):
        """tune_garbage_collection sets GC_THRESHOLDS for the process (serve and demo call it)."""
        before = gc.get_threshold()
        try:
            tune_garbage_collection()
            assert gc.get_threshold() == GC_THRESHOLDS
        finally:
            gc.set_threshold(*before)


class TestRequestHeadDeadline:
    async def test_trickled_head_is_closed_at_the_deadline(self, serve):
        """A connection that keeps sending a head byte by byte is closed, unanswered, at the deadline."""
        served = await serve(request_head_timeout_s=DEADLINE_S)
        async with served.connect() as (reader, writer):
            received, elapsed_s = await trickle_until_closed(reader, writer, OPEN_HEAD + b"a" * 1000)
        assert received == b""
        assert DEADLINE_S <= elapsed_s < DEADLINE_S + 1.0

    async def test_a_response_outlives_the_deadline(self, serve):
        """Once the head is complete, the deadline no longer applies: a long response is not cut."""
        served = await serve(request_head_timeout_s=DEADLINE_S)
        async with served.connect() as (reader, writer):
            writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            async with asyncio.timeout(WAIT_S):
                await served.app.streaming.wait()
            await asyncio.sleep(DEADLINE_S * 2)
            served.app.release.set()
            received = await read_to_end(reader)
        assert received.startswith(b"HTTP/1.1 200 ")
        assert b"open\n" in received and b"done\n" in received

    async def test_a_later_head_has_its_own_deadline_from_its_first_byte(self, serve):
        """On a keep-alive connection the next request may come after the first deadline, but a head
        trickled byte by byte is closed when its own deadline, counted from its first byte, passes."""
        served = await serve(request_head_timeout_s=DEADLINE_S)
        async with served.connect() as (reader, writer):
            writer.write(REQUEST)
            assert (await read_answer(reader))["path"] == "/plain"
            await asyncio.sleep(DEADLINE_S * 2)
            writer.write(REQUEST.replace(b"/plain", b"/second"))
            assert (await read_answer(reader))["path"] == "/second"
            received, elapsed_s = await trickle_until_closed(reader, writer, OPEN_HEAD + b"a" * 1000)
        assert received == b""
        assert DEADLINE_S <= elapsed_s < DEADLINE_S + 1.0


class TestIncompleteRequestBound:
    @pytest.mark.parametrize("piece_bytes", [1024, 64 * 1024], ids=["in-pieces", "in-one-write"])
    async def test_over_long_incomplete_head_is_refused_and_closed(self, serve, piece_bytes):
        """One byte more than MAX_REQUEST_HEAD_BYTES of an unfinished head: uvicorn's 400, then the close."""
        served = await serve()
        async with served.connect() as (reader, writer):
            await send_in_pieces(writer, TOO_LONG_HEAD, piece_bytes=piece_bytes)
            assert_refused(await read_to_end(reader))

    async def test_a_head_of_the_limit_is_taken(self, serve):
        """MAX_REQUEST_HEAD_BYTES of a head received before it ends are not refused."""
        served = await serve()
        async with served.connect() as (reader, writer):
            await send_in_pieces(writer, OPEN_HEAD.ljust(MAX_REQUEST_HEAD_BYTES, b"a"), piece_bytes=1024)
            writer.write(b"\r\n\r\n")
            assert (await read_answer(reader))["path"] == "/plain"

    async def test_a_head_complete_in_one_write_is_bounded_too(self, serve):
        """Unlike h11's buffer limit, the bound does not depend on the head arriving in several reads."""
        served = await serve()
        async with served.connect() as (reader, writer):
            # Past the limit by more than FEED_BYTES, the piece the parser is given at once.
            writer.write(OPEN_HEAD.ljust(MAX_REQUEST_HEAD_BYTES + FEED_BYTES + 1, b"a") + b"\r\n\r\n")
            assert_refused(await read_to_end(reader))

    async def test_every_head_of_a_keep_alive_connection_is_bounded(self, serve):
        """The second request's head is bounded as the first one's, as h11 bounded every head."""
        served = await serve()
        async with served.connect() as (reader, writer):
            writer.write(REQUEST)
            await read_answer(reader)
            await send_in_pieces(writer, TOO_LONG_HEAD, piece_bytes=1024)
            assert_refused(await read_to_end(reader))

    async def test_trailers_are_bounded(self, serve):
        """Chunked trailers that do not end are refused like an over-long head."""
        served = await serve()
        async with served.connect() as (reader, writer):
            writer.write(CHUNKED_HEAD + b"1\r\nz\r\n")
            async with asyncio.timeout(WAIT_S):
                await served.app.body_started.wait()
            await send_in_pieces(writer, b"0\r\nX-Trailer: ".ljust(MAX_REQUEST_HEAD_BYTES + 1, b"a"), piece_bytes=1024)
            assert_refused(await read_to_end(reader))

    async def test_trailers_do_not_become_request_headers(self, serve):
        """Trailers are dropped, as h11's protocol dropped them, instead of joining the headers the app holds."""
        served = await serve()
        async with served.connect() as (reader, writer):
            writer.write(CHUNKED_HEAD + b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n")
            answer = await read_answer(reader)
        assert answer["headers"] == ["host", "transfer-encoding"]
        assert answer["body_bytes"] == 5

    async def test_many_small_chunks_are_taken(self, serve):
        """Chunk framing between body data does not add up towards the bound."""
        served = await serve()
        async with served.connect() as (reader, writer):
            chunks = b"1\r\nz\r\n" * 20_000 + b"0\r\n\r\n"
            writer.write(CHUNKED_HEAD + chunks)
            assert (await read_answer(reader))["body_bytes"] == 20_000

    async def test_pipelined_requests_after_a_large_body(self, serve):
        """A body larger than the bound, and the request behind it in the same write, are both served."""
        served = await serve()
        body = b"b" * 3 * MAX_REQUEST_HEAD_BYTES
        async with served.connect() as (reader, writer):
            writer.write(
                b"GET /plain HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body) + REQUEST
            )
            assert (await read_answer(reader))["body_bytes"] == len(body)
            assert (await read_answer(reader))["body_bytes"] == 0

    async def test_over_long_head_behind_a_response_closes_the_connection(self, serve):
        """A pipelined head over the bound while a response streams: the connection closes, no 400 inside the stream."""
        served = await serve()
        async with served.connect() as (reader, writer):
            writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
            async with asyncio.timeout(WAIT_S):
                await served.app.streaming.wait()
            await send_in_pieces(writer, TOO_LONG_HEAD, piece_bytes=1024)
            received = await read_to_end(reader)
            served.app.release.set()
        assert received.startswith(b"HTTP/1.1 200 ")
        assert b"open\n" in received
        assert REFUSAL not in received and b"done\n" not in received

    async def test_over_long_head_while_a_request_waits_for_its_answer(self, serve):
        """A pipelined head over the bound while the first request is still in the app: the connection
        closes without a status line, which the client would read as the first request's answer."""
        served = await serve()
        async with served.connect() as (reader, writer):
            writer.write(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
            async with asyncio.timeout(WAIT_S):
                await served.app.holding.wait()
            await send_in_pieces(writer, TOO_LONG_HEAD, piece_bytes=1024)
            received = await read_to_end(reader)
            served.app.release.set()
        assert received == b""


class TestRequestBodies:
    async def test_a_body_still_arriving_after_the_answer_closes_the_connection(self, serve):
        """A request body trickled after its response is complete cannot hold the connection open."""
        served = await serve()
        async with served.connect() as (reader, writer):
            writer.write(b"GET /early HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nabc")
            received, elapsed_s = await trickle_until_closed(reader, writer, b"a" * 1000)
        assert received.startswith(b"HTTP/1.1 200 ") and received.endswith(b"ok\n")
        assert elapsed_s < 1.0


def test_uvicorn_is_inside_the_tested_range():
    """The protocol extends uvicorn internals: the installed uvicorn is inside the range pyproject declares
    (CI runs these tests at both ends of it)."""
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    (requirement,) = [Requirement(item) for item in pyproject["project"]["dependencies"] if item.startswith("uvicorn")]
    assert requirement.specifier.contains(version("uvicorn")), (version("uvicorn"), str(requirement.specifier))
    assert any(spec.operator == "<" for spec in requirement.specifier), "the range has an upper bound"
