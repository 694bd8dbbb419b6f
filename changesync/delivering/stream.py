"""The per-client SSE response: a prologue (replay, catch-up, snapshot), then the live queue.

``EventStream`` is a small ASGI response written for this one job. It replaces sse-starlette's
``EventSourceResponse``, which runs an anyio task group of three tasks per connection (~5 KB) and
opens a cancel scope around every send (~7 us). Per connection it adds one task, which awaits
``receive()`` to notice a disconnect at once.

The stream's own task is *interrupted* (cancelled, and the cancellation absorbed here) when:

- the client goes away: whatever the stream awaits (the prologue, the queue, a send) stops;
- a send has not returned after ``send_timeout_s`` (a client that stopped reading): the stream
  ends with ``SendTimeoutError``, which uvicorn logs before it closes the connection;
- the server shuts down and the stream is still running after the grace period. Housekeeping
  first closes every subscriber with a farewell, which ends the streams that are live.

``on_close(subscriber)`` runs exactly once, however the stream ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Literal, TypeAlias

from starlette.types import Message, Receive, Scope, Send

from ..errors import SendTimeoutError
from ..frames import resync_frame
from .broadcast import Subscriber

logger = logging.getLogger(__name__)

# Seconds a stream may take to send its farewell after the server was told to stop; must stay
# below the server's graceful-shutdown timeout.
SHUTDOWN_GRACE_S = 2.0
# The headers sse-starlette's EventSourceResponse sent: caches must not store the stream, proxies
# (nginx) must not buffer it.
EVENT_STREAM_HEADERS = (
    (b"cache-control", b"no-store"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
    (b"content-type", b"text/event-stream; charset=utf-8"),
)

Interruption: TypeAlias = Literal["disconnected", "send-timeout", "shutdown"]


class OpenStreams:
    """The streams of one app that have not ended, so that shutdown can end the stragglers."""

    __slots__ = ("_streams",)

    def __init__(self) -> None:
        self._streams: set[EventStream] = set()

    def __len__(self) -> int:
        return len(self._streams)

    def add(self, stream: EventStream) -> None:
        self._streams.add(stream)

    def discard(self, stream: EventStream) -> None:
        self._streams.discard(stream)

    def interrupt_all(self) -> int:
        """End every open stream without a farewell (the grace period is over); returns how many."""
        streams = list(self._streams)
        for stream in streams:
            stream.interrupt("shutdown")
        return len(streams)


class EventStream:
    """An endless ``text/event-stream`` for one subscriber, as an ASGI application (one request);
    ``on_close`` runs however it ends.

    Heartbeats are queued by the broker like any other delivery, so they never overtake events.
    """

    __slots__ = (
        "_interrupted",
        "_listener",
        "_loop",
        "_on_close",
        "_prologue",
        "_retry_ms",
        "_send_started",
        "_send_timeout_s",
        "_streams",
        "_subscriber",
        "_task",
        "_watchdog",
    )
    _loop: asyncio.AbstractEventLoop

    def __init__(
        self,
        subscriber: Subscriber,
        prologue: AsyncGenerator[bytes, None],
        *,
        send_timeout_s: float,
        retry_ms: int,
        on_close: Callable[[Subscriber], None],
        streams: OpenStreams,
    ) -> None:
        if send_timeout_s <= 0:
            raise ValueError(f"send_timeout_s must be > 0, got {send_timeout_s}")
        self._subscriber = subscriber
        self._prologue = prologue
        self._send_timeout_s = send_timeout_s
        self._retry_ms = retry_ms
        self._on_close = on_close
        self._streams = streams
        self._task: asyncio.Task[object] | None = None
        """The task running the stream; ``None`` before and after, when nothing may interrupt it."""
        self._interrupted: Interruption | None = None
        self._listener: asyncio.Task[None] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._send_started: float | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._loop = asyncio.get_running_loop()
        cancelling = task.cancelling()
        self._task = task
        self._streams.add(self)
        self._listener = self._loop.create_task(self._listen(receive))
        try:
            await self._run(send, head=scope["method"] == "HEAD")
        except asyncio.CancelledError:
            reason = self._interrupted
            if reason is None or task.uncancel() > cancelling:
                raise  # cancelled from outside (e.g. uvicorn's graceful-shutdown timeout)
            if reason == "send-timeout":
                raise SendTimeoutError(self._send_timeout_s) from None
            # Disconnected: nobody to tell. Shut down: the response stays incomplete, so uvicorn
            # closes the connection, as it does for the other streams it could not end.
        finally:
            self._task = None
            self._streams.discard(self)
            self._listener.cancel()
            if self._watchdog is not None:
                self._watchdog.cancel()
                self._watchdog = None
            self._on_close(self._subscriber)

    def interrupt(self, reason: Interruption) -> None:
        """Stop the stream wherever it waits; the first reason wins, and nothing happens after it ended."""
        if self._task is not None and self._interrupted is None:
            self._interrupted = reason
            self._task.cancel()

    async def _run(self, send: Send, *, head: bool) -> None:
        await self._send(send, {"type": "http.response.start", "status": 200, "headers": list(EVENT_STREAM_HEADERS)})
        if not head:  # HEAD: the same headers and an empty body, never the stream
            async with contextlib.aclosing(self._prologue) as prologue:
                async for chunk in prologue:
                    await self._send(send, {"type": "http.response.body", "body": chunk, "more_body": True})
            await self._live(send)
        await self._send(send, {"type": "http.response.body", "body": b"", "more_body": False})

    async def _live(self, send: Send) -> None:
        subscriber = self._subscriber
        while True:
            await subscriber.wait()
            if subscriber.overflowed:
                frame = resync_frame(subscriber.flow_id, "slow-consumer", retry_ms=self._retry_ms).data
                await self._send(send, {"type": "http.response.body", "body": frame, "more_body": True})
                return
            if subscriber.queued:
                # Several queued frames travel in one write.
                await self._send(send, {"type": "http.response.body", "body": subscriber.drain(), "more_body": True})
            if subscriber.finished:
                return

    async def _send(self, send: Send, message: Message) -> None:
        """``send(message)``; a send still waiting after ``send_timeout_s`` interrupts the stream.

        Most sends return at once, so the timer is not rescheduled around each one: it is armed
        when a send starts and none is armed, and when it fires it looks at the send in progress
        (if any) and sleeps until that send's deadline. A send is therefore cut off between
        ``send_timeout_s`` after it started and the timer's lateness later.
        """
        self._send_started = started = self._loop.time()
        if self._watchdog is None:
            self._watchdog = self._loop.call_at(started + self._send_timeout_s, self._check_send)
        try:
            await send(message)
        finally:
            self._send_started = None

    def _check_send(self) -> None:
        self._watchdog = None
        started = self._send_started
        if started is None:
            return  # no send in progress: the next one arms the timer again
        deadline = started + self._send_timeout_s
        if self._loop.time() >= deadline:
            self.interrupt("send-timeout")
        else:
            self._watchdog = self._loop.call_at(deadline, self._check_send)

    async def _listen(self, receive: Receive) -> None:
        """Wait for the client to go away, then interrupt the stream (it may be awaiting anything)."""
        try:
            while (await receive())["type"] != "http.disconnect":
                pass  # the (empty) body of the GET
        except Exception:
            logger.debug("receive failed: the client is gone", exc_info=True)
        self.interrupt("disconnected")
