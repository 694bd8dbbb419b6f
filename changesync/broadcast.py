"""Fan-out of encoded SSE frames to the subscribers of each flow.

A frame is encoded once per event and the same ``bytes`` object is queued for every subscriber.
Queues are bounded: a subscriber that falls behind is marked ``overflowed`` and its stream ends.
Publishing never awaits, so one slow socket can never slow the watcher or other clients.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator


class Subscriber:
    """One SSE client's view of one flow."""

    __slots__ = ("_frames", "_wakeup", "closed_reason", "flow_id", "max_queue", "overflowed", "types")

    def __init__(self, flow_id: str, types: frozenset[str] | None, max_queue: int) -> None:
        self.flow_id = flow_id
        self.types = types
        self.max_queue = max_queue
        self.overflowed = False
        self.closed_reason: str | None = None
        self._frames: deque[bytes] = deque()
        self._wakeup = asyncio.Event()

    @property
    def queued(self) -> int:
        return len(self._frames)

    def wants(self, event_type: str) -> bool:
        return self.types is None or event_type in self.types

    def offer(self, frame: bytes) -> bool:
        """Queue a frame; ``False`` (and the subscriber is overflowed) when the queue is full."""
        if self.overflowed or self.closed_reason is not None:
            return False
        if len(self._frames) >= self.max_queue:
            self.overflowed = True
            self._frames.clear()
            self._wakeup.set()
            return False
        self._frames.append(frame)
        self._wakeup.set()
        return True

    def close(self, reason: str, farewell: bytes | None = None) -> None:
        """End the subscription after the queued frames (and ``farewell``) are sent."""
        if self.closed_reason is None:
            self.closed_reason = reason
            if farewell is not None:
                self._frames.append(farewell)
        self._wakeup.set()

    async def wait(self) -> None:
        """Wait until there is something to send or the subscription has ended."""
        if not self._frames and not self.overflowed and self.closed_reason is None:
            await self._wakeup.wait()
        self._wakeup.clear()

    def drain(self) -> bytes:
        """Everything queued, as one chunk (several frames travel in one write)."""
        if len(self._frames) == 1:
            return self._frames.popleft()
        chunk = b"".join(self._frames)
        self._frames.clear()
        return chunk

    @property
    def finished(self) -> bool:
        return (self.overflowed or self.closed_reason is not None) and not self._frames


class Broker:
    """Subscribers by flow id."""

    def __init__(self, *, max_queue: int, on_overflow: Callable[[Subscriber], None] | None = None) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.max_queue = max_queue
        self._flows: dict[str, set[Subscriber]] = {}
        self.on_overflow = on_overflow

    def subscribe(self, flow_id: str, types: frozenset[str] | None = None) -> Subscriber:
        subscriber = Subscriber(flow_id, types, self.max_queue)
        self._flows.setdefault(flow_id, set()).add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        subscribers = self._flows.get(subscriber.flow_id)
        if subscribers is None:
            return
        subscribers.discard(subscriber)
        if not subscribers:
            del self._flows[subscriber.flow_id]

    def has_subscribers(self, flow_id: str) -> bool:
        return flow_id in self._flows

    def publish(self, flow_id: str, event_type: str, frame: bytes) -> int:
        """Queue ``frame`` for every subscriber of the flow that wants ``event_type``; returns deliveries."""
        subscribers = self._flows.get(flow_id)
        if not subscribers:
            return 0
        delivered = 0
        for subscriber in subscribers:
            if subscriber.types is not None and event_type not in subscriber.types:
                continue
            if subscriber.overflowed or subscriber.closed_reason is not None:
                continue
            if subscriber.offer(frame):
                delivered += 1
            elif self.on_overflow is not None:
                self.on_overflow(subscriber)
        return delivered

    def announce(self, frame_for_flow: Callable[[str], bytes]) -> None:
        """Queue a control frame for every subscriber, whatever event types it asked for."""
        for flow_id, subscribers in list(self._flows.items()):
            frame = frame_for_flow(flow_id)
            for subscriber in subscribers:
                if not subscriber.offer(frame) and subscriber.overflowed and self.on_overflow is not None:
                    self.on_overflow(subscriber)

    def close_all(self, reason: str, farewell: Callable[[str], bytes | None]) -> None:
        """End every subscription, each with the farewell frame built for its flow."""
        for flow_id, subscribers in list(self._flows.items()):
            frame = farewell(flow_id)
            for subscriber in subscribers:
                subscriber.close(reason, frame)

    def flows(self) -> Iterator[str]:
        return iter(list(self._flows))

    @property
    def subscriber_count(self) -> int:
        return sum(len(subscribers) for subscribers in self._flows.values())
