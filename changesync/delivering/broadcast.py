"""Subscribers stage: fan-out of encoded frames to the subscribers of each flow, in this process.

A frame is encoded once per event and the same ``Frame`` is queued for every subscriber. A
subscriber that asked for patch-only updates takes the frame's second, ready-made byte string when
it has one (``Frame.patch_data``); nothing is encoded per subscriber.
Queues are bounded. When one fills up, it is first compacted by each route's overflow policy
(coalesce canvas updates of one document, collapse log chunks); if that does not free enough
room, the subscriber is cut off and told to resync. Publishing never awaits, so one slow socket
can never slow the watcher or other clients.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Literal, TypeAlias

from ..frames import Frame, coalesced_frame, collapsed_frame
from ..logs import RateLimitedLog
from ..metrics import Metrics

logger = logging.getLogger(__name__)

OverflowPolicy: TypeAlias = Literal["coalesce", "collapse", "keep"]
# After compaction a queue must be at most this full, or the subscriber is cut off: compacting
# again for every single new event would cost O(queue) per event.
COMPACTED_FILL = 0.75
# The newest log chunks kept as they are when older ones are collapsed into one event.
KEEP_NEWEST_CHUNKS = 8

Compactor: TypeAlias = Callable[[list[Frame]], list[Frame]]


class Subscriber:
    """One SSE client's view of one flow."""

    __slots__ = (
        "_compact",
        "_frames",
        "_waiter",
        "closed_reason",
        "expires_at",
        "flow_id",
        "held",
        "max_queue",
        "overflowed",
        "patch_only",
        "sent_since_tick",
        "subject",
        "types",
        "unrestricted",
    )

    def __init__(
        self,
        flow_id: str,
        types: frozenset[str] | None,
        max_queue: int,
        *,
        compact: Compactor | None = None,
        held: bool = False,
    ) -> None:
        self.flow_id = flow_id
        self.types = types
        self.max_queue = max_queue
        self.overflowed = False
        self.closed_reason: str | None = None
        self.held = held
        self.sent_since_tick = False
        self.subject = ""
        """Who subscribed; ``unrestricted`` subscribers (services) skip access re-checks."""
        self.unrestricted = True
        self.expires_at: float | None = None
        """When the subscriber's credentials expire (epoch seconds), if they do."""
        self.patch_only = False
        """Updates with a patch arrive without their document (``?updates=patch``); read when sending."""
        self._compact = compact
        self._frames: deque[Frame] = deque()
        # Created by wait() only while it waits: an asyncio.Event per subscriber would hold a deque
        # (~0.7 KB) for the whole connection.
        self._waiter: asyncio.Future[None] | None = None

    @property
    def queued(self) -> int:
        return len(self._frames)

    def wants(self, event_type: str) -> bool:
        return self.types is None or event_type in self.types

    def offer(self, frame: Frame) -> bool:
        """Queue a frame; ``False`` (and the subscriber is overflowed) when there is no room."""
        if self.overflowed or self.closed_reason is not None:
            return False
        if len(self._frames) >= self.max_queue and not self._make_room():
            self.overflowed = True
            self._frames.clear()
            self._wake()
            return False
        self._frames.append(frame)
        self.sent_since_tick = True
        if not self.held:
            self._wake()
        return True

    def _make_room(self) -> bool:
        if self._compact is None:
            return False
        compacted = self._compact(list(self._frames))
        if len(compacted) > self.max_queue * COMPACTED_FILL:
            return False
        self._frames = deque(compacted)
        return True

    def close(self, reason: str, farewell: Frame | None = None) -> None:
        """End the subscription after the queued frames (and ``farewell``) are sent."""
        if self.closed_reason is None:
            self.closed_reason = reason
            if farewell is not None:
                self._frames.append(farewell)
        self.held = False
        self._wake()

    def release(self) -> None:
        """Start delivering what was queued while the subscriber was held."""
        self.held = False
        self._wake()

    def discard(self, unwanted: Callable[[Frame], bool]) -> None:
        """Remove queued frames for which ``unwanted`` is true, keeping the order of the rest."""
        self._frames = deque(frame for frame in self._frames if not unwanted(frame))

    def take(self) -> list[Frame]:
        """Remove and return everything queued (used while held, e.g. to fold into a snapshot)."""
        taken = list(self._frames)
        self._frames.clear()
        return taken

    async def wait(self) -> None:
        """Wait until there is something to send or the subscription has ended (one waiter: the stream)."""
        if (self.held or not self._frames) and not self.overflowed and self.closed_reason is None:
            if self._waiter is not None:
                raise RuntimeError("a subscriber has one waiter at a time")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def encoded(self, frame: Frame) -> bytes:
        """The variant of ``frame`` this subscriber receives."""
        return (frame.patch_data or frame.data) if self.patch_only else frame.data

    def drain(self) -> bytes:
        """Everything queued, as one chunk (several frames travel in one write)."""
        frames = self._frames
        if self.patch_only:
            chunk = b"".join(frame.patch_data or frame.data for frame in frames)
        elif len(frames) == 1:
            return frames.popleft().data
        else:
            chunk = b"".join(frame.data for frame in frames)
        frames.clear()
        return chunk

    @property
    def finished(self) -> bool:
        return (self.overflowed or self.closed_reason is not None) and not self._frames


class Broker:
    """Subscribers by flow id."""

    def __init__(
        self,
        *,
        max_queue: int,
        on_overflow: Callable[[Subscriber], None] | None = None,
        compact: Compactor | None = None,
    ) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.max_queue = max_queue
        self.on_overflow = on_overflow
        self._flows: dict[str, set[Subscriber]] = {}
        self._per_subject: dict[str, int] = {}
        self._total = 0
        self._compact = compact

    def subscribe(
        self,
        flow_id: str,
        types: frozenset[str] | None = None,
        *,
        held: bool = False,
        subject: str = "",
    ) -> Subscriber:
        """A new subscriber; ``held`` queues frames without waking it until ``release()``."""
        subscriber = Subscriber(flow_id, types, self.max_queue, compact=self._compact, held=held)
        subscriber.subject = subject
        self._flows.setdefault(flow_id, set()).add(subscriber)
        self._per_subject[subject] = self._per_subject.get(subject, 0) + 1
        self._total += 1
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        subscribers = self._flows.get(subscriber.flow_id)
        if subscribers is None or subscriber not in subscribers:
            return
        subscribers.discard(subscriber)
        if not subscribers:
            del self._flows[subscriber.flow_id]
        self._total -= 1
        remaining = self._per_subject.get(subscriber.subject, 1) - 1
        if remaining:
            self._per_subject[subscriber.subject] = remaining
        else:
            self._per_subject.pop(subscriber.subject, None)

    def count_for(self, subject: str) -> int:
        """Open subscriptions of one subject."""
        return self._per_subject.get(subject, 0)

    def has_subscribers(self, flow_id: str) -> bool:
        return flow_id in self._flows

    def publish(self, frame: Frame) -> int:
        """Queue ``frame`` for every subscriber of its flow that wants it; returns how many."""
        subscribers = self._flows.get(frame.flow_id)
        if not subscribers:
            return 0
        delivered = 0
        event_type = frame.event_type
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

    def announce(self, frame_for_flow: Callable[[str], Frame]) -> None:
        """Queue a control frame for every subscriber, whatever event types it asked for."""
        for flow_id, subscribers in list(self._flows.items()):
            frame = frame_for_flow(flow_id)
            for subscriber in subscribers:
                if not subscriber.offer(frame) and subscriber.overflowed and self.on_overflow is not None:
                    self.on_overflow(subscriber)

    def tick(self, heartbeat: Frame) -> None:
        """Send ``heartbeat`` to every live subscriber that received nothing since the last tick."""
        for subscribers in self._flows.values():
            for subscriber in subscribers:
                if not subscriber.sent_since_tick and not subscriber.held and not subscriber.queued:
                    subscriber.offer(heartbeat)
                subscriber.sent_since_tick = False

    def close_all(self, reason: str, farewell: Frame | None = None) -> None:
        """End every subscription, after its queue and ``farewell``."""
        for subscribers in list(self._flows.values()):
            for subscriber in subscribers:
                subscriber.close(reason, farewell)

    def flows(self) -> Iterator[str]:
        return iter(list(self._flows))

    def subscribers(self) -> Iterator[Subscriber]:
        return iter([subscriber for subscribers in self._flows.values() for subscriber in subscribers])

    @property
    def subscriber_count(self) -> int:
        return self._total


class SlowConsumers:
    """The broker's ``on_overflow``: counts every client cut off, and logs them at a bounded rate."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._rare = RateLimitedLog(logger)

    def cut(self, subscriber: Subscriber) -> None:
        self.metrics.clients_disconnected_slow.inc()
        self.metrics.labelled(self.metrics.resyncs, "slow-consumer").inc()
        self._rare.warning("slow-consumer", "disconnected a slow client of flow %s", subscriber.flow_id)


def make_compactor(policies: Mapping[str, OverflowPolicy]) -> Compactor:
    """Build the compaction of a full queue from the overflow policies of the routes (by collection).

    ``coalesce``: queued changes of one document become one with its latest state, at the position
    of the latest change. ``collapse``: all but the newest chunks become one event that says how many
    were skipped, at the position of the last skipped one. ``keep``: never dropped.
    A coalesced change carries the whole latest document, for patch-only subscribers too: the
    patches in between are gone, so it has no patch-only variant.
    Positions only move forward, so the ids a client sees stay in order.
    """

    def compact(frames: list[Frame]) -> list[Frame]:
        last_of_document: dict[tuple[str, str], int] = {}
        counts: dict[tuple[str, str], int] = {}
        collapsible: list[int] = []
        for index, frame in enumerate(frames):
            if not frame.is_change:
                continue
            policy = policies.get(frame.collection, "keep")
            if policy == "coalesce":
                key = (frame.collection, frame.document_key)
                last_of_document[key] = index
                counts[key] = counts.get(key, 0) + 1
            elif policy == "collapse":
                collapsible.append(index)
        keep_last = {index: counts[key] for key, index in last_of_document.items()}
        skipped = set(collapsible[:-KEEP_NEWEST_CHUNKS]) if len(collapsible) > KEEP_NEWEST_CHUNKS else set()
        last_skipped = max(skipped) if skipped else -1
        compacted: list[Frame] = []
        for index, frame in enumerate(frames):
            if not frame.is_change:
                if frame.event_type:
                    compacted.append(frame)  # control frames stay; heartbeats (no type) go
                continue
            policy = policies.get(frame.collection, "keep")
            if policy == "coalesce":
                count = keep_last.get(index)
                if count is None:
                    continue
                compacted.append(frame if count == 1 else coalesced_frame(frame, count))
            elif index in skipped:
                if index == last_skipped:
                    compacted.append(collapsed_frame(frame, len(skipped)))
            else:
                compacted.append(frame)
        return compacted

    return compact
