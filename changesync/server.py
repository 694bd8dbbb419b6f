"""How changesync runs under uvicorn: one place for the server's limits and timeouts."""

from __future__ import annotations

import asyncio
import gc
import socket
from types import FrameType

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .app import create_app
from .settings import Settings

# Graceful shutdown: streams get their farewell well within this, then uvicorn cancels the rest.
GRACEFUL_SHUTDOWN_S = 5
# Bytes of an incomplete request head (or chunk-size line, or trailers) taken before the request is refused.
MAX_REQUEST_HEAD_BYTES = 16 * 1024
# Largest piece of received data handed to the parser at once: the precision of the count above.
FEED_BYTES = 4 * 1024
# What uvicorn answers (400, with this body) when a request cannot be parsed; h11 answered so on an
# over-long head as well.
INVALID_REQUEST = "Invalid HTTP request received."
# Cyclic garbage collection thresholds for the service's process (CPython's default: 700, 10, 10).
# Each heartbeat round allocates a few objects per connection; with the default, a round over
# 10,000 connections ran ~100 collections that walked the connections' long-lived objects. Measured
# with benchmarks.idle (10,000 connections): 29.7 -> 19.7 us per heartbeat, and 3.4 % -> 1.6 % of a
# core for everything idle connections cost at 15 s, at the same RSS. Only cyclic garbage waits
# longer: up to this many container allocations.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_garbage_collection() -> None:
    """Set ``GC_THRESHOLDS`` for this process: call it where the service owns the process (``serve``)."""
    gc.set_threshold(*GC_THRESHOLDS)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools HTTP/1.1 protocol, plus a deadline for every request head and a bound on
    the bytes of an incomplete one.

    Slow-loris connections that trickle a request head are closed: uvicorn's own keep-alive timer
    restarts with every byte received, so it cannot catch them. The first head's deadline runs from
    the connection's start; a later one's (keep-alive) from its first byte, even behind a response
    that is still streaming. Request bodies are never read here: once its response is complete, a
    connection whose request body is still arriving is closed, so a body trickled forever cannot
    hold it either.

    llhttp parses bytes as they arrive and sets no size limit: uvicorn collects the target and headers,
    httptools the header being received, without end. So the bytes received since the parser last
    completed something (a head, body data, a message) are counted, to within ``FEED_BYTES``; past
    ``MAX_REQUEST_HEAD_BYTES`` the request is refused with uvicorn's 400, or the connection closed if a
    response is under way. Like h11's buffer limit, this bounds every head of a keep-alive connection,
    chunk-size lines and trailers; unlike it, a head that arrives complete in one read is bounded too.
    """

    request_head_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._pending_bytes = 0
        self._in_head = True
        self._head_deadline: asyncio.TimerHandle | None = self.loop.call_later(
            self.request_head_timeout_s, self._head_timed_out
        )

    def data_received(self, data: bytes) -> None:
        # In pieces, so that the count is exact to within FEED_BYTES wherever the parser completes something.
        for start in range(0, len(data), FEED_BYTES):
            piece = data[start : start + FEED_BYTES] if len(data) > FEED_BYTES else data
            self._pending_bytes += len(piece)
            super().data_received(piece)
            if self.transport.is_closing() or self.transport.get_protocol() is not self:
                return  # refused as malformed, or upgraded: the rest is not ours to parse
            if self._pending_bytes > MAX_REQUEST_HEAD_BYTES:
                self._refuse_incomplete()
                return

    def on_message_begin(self) -> None:
        self._in_head = True
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self.request_head_timeout_s, self._head_timed_out)
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        # After the head, llhttp reports chunked trailers here too, and uvicorn would append them to the
        # headers the application already holds. h11's protocol dropped them; so do we.
        if self._in_head:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._pending_bytes = 0
        self._cancel_head_deadline()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._pending_bytes = 0
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._pending_bytes = 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        answered_current = not self.pipeline  # otherwise the response was an earlier, pipelined request's
        super().on_response_complete()
        cycle = self.cycle
        if answered_current and cycle is not None and cycle.more_body and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def _refuse_incomplete(self) -> None:
        self.logger.warning(
            "Over %d bytes without a complete request head, chunk size or trailers", MAX_REQUEST_HEAD_BYTES
        )
        cycle = self.cycle
        if self.pipeline or (
            cycle is not None and not cycle.response_complete and (cycle.response_started or not cycle.more_body)
        ):
            # A response is under way, or these bytes start a new request while the previous one is still
            # being answered: a status line now would be read as that request's answer.
            self.transport.close()
        else:
            self.send_400_response(INVALID_REQUEST)

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def uvicorn_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=type(
            "GuardedHttpToolsProtocol",
            (GuardedHttpToolsProtocol,),
            {"request_head_timeout_s": settings.limits.request_head_timeout_s},
        ),
        log_config=None,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        server_header=False,
    )


class Server(uvicorn.Server):
    """uvicorn's server, which also tells the app when a signal asks it to stop, so that streams get
    their farewell (``app.state.shutdown``, a ``ShutdownNotice``) before uvicorn waits for them."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        notice = getattr(self.app.state, "shutdown", None)
        if notice is not None:
            notice.request()


def make_server(app: Starlette, settings: Settings) -> Server:
    return Server(uvicorn_config(app, settings), app)


def serve(settings: Settings, *, reuse_port: bool = False) -> None:
    """Run the service in this process until a signal stops it. With ``reuse_port``, the port is
    bound with SO_REUSEPORT: other processes may listen on it too, and the kernel spreads the
    connections over them."""
    tune_garbage_collection()
    server = make_server(create_app(settings), settings)
    if not reuse_port:
        server.run()
        return
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((settings.host, settings.port))
    listener.set_inheritable(False)
    server.run(sockets=[listener])
