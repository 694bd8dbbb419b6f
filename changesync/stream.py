"""The per-client SSE response: drains a subscriber's queue onto the socket."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from sse_starlette import EventSourceResponse, ServerSentEvent

from .broadcast import Subscriber
from .events import comment_frame, resync_frame

HEARTBEAT = ServerSentEvent(comment="heartbeat")


def event_stream(
    subscriber: Subscriber,
    *,
    heartbeat_interval_s: float,
    send_timeout_s: float,
    retry_ms: int,
    on_close: Callable[[Subscriber], None],
) -> EventSourceResponse:
    """An endless ``text/event-stream`` for one subscriber; ``on_close`` runs however it ends."""

    async def frames() -> AsyncIterator[bytes]:
        try:
            # The retry hint and a comment go out at once, so the client knows the stream is live.
            yield b"retry: " + str(retry_ms).encode("ascii") + b"\n" + comment_frame("connected")
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
        ping=heartbeat_interval_s,
        ping_message_factory=lambda: HEARTBEAT,
        send_timeout=send_timeout_s,
        headers={"Cache-Control": "no-store"},
    )
