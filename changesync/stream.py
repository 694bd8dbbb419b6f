"""The per-client SSE response: a prologue (replay, catch-up, snapshot), then the live queue."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from sse_starlette import EventSourceResponse
from sse_starlette.sse import AppStatus

from .broadcast import Subscriber
from .events import resync_frame

# Seconds a stream may take to send its farewell after the server was told to stop; must stay
# below the server's graceful-shutdown timeout.
SHUTDOWN_GRACE_S = 2.0


def shutdown_requested() -> bool:
    """Whether the server received SIGTERM/SIGINT (sse-starlette watches uvicorn's exit)."""
    return bool(AppStatus.should_exit)


def event_stream(
    subscriber: Subscriber,
    prologue: AsyncIterator[bytes],
    *,
    send_timeout_s: float,
    retry_ms: int,
    on_close: Callable[[Subscriber], None],
) -> EventSourceResponse:
    """An endless ``text/event-stream`` for one subscriber; ``on_close`` runs however it ends.

    Heartbeats are queued by the broker like any other delivery, so they never overtake events.
    """

    async def frames() -> AsyncIterator[bytes]:
        try:
            async for data in prologue:
                yield data
            while True:
                await subscriber.wait()
                if subscriber.overflowed:
                    yield resync_frame(subscriber.flow_id, "slow-consumer", retry_ms=retry_ms)
                    return
                if subscriber.queued:
                    yield subscriber.drain()
                if subscriber.finished:
                    return
        finally:
            on_close(subscriber)

    return EventSourceResponse(
        frames(),
        ping=0,
        send_timeout=send_timeout_s,
        shutdown_grace_period=SHUTDOWN_GRACE_S,
        headers={"Cache-Control": "no-store"},
    )
