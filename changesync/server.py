"""How changesync runs under uvicorn: one place for the server's limits and timeouts."""

from __future__ import annotations

import asyncio

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from .settings import Settings

# Graceful shutdown: streams get their farewell well within this, then uvicorn cancels the rest.
GRACEFUL_SHUTDOWN_S = 5
# Bytes h11 buffers for an incomplete request head before it answers 431/400.
MAX_REQUEST_HEAD_BYTES = 16 * 1024


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, plus a deadline for the first request head.

    Slow-loris connections that trickle bytes are closed: uvicorn's own keep-alive timer restarts
    with every byte received, so it cannot catch them.
    """

    request_head_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_deadline: asyncio.TimerHandle | None = self.loop.call_later(
            self.request_head_timeout_s, self._head_timed_out
        )

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None:
            self._cancel_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()


def uvicorn_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=type(
            "GuardedH11Protocol",
            (GuardedH11Protocol,),
            {"request_head_timeout_s": settings.limits.request_head_timeout_s},
        ),
        log_config=None,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        h11_max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES,
        server_header=False,
    )
