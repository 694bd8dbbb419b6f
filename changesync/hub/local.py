"""``LocalHub``: the in-process hub, for a single process that watches and serves."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ..delivering.broadcast import Broker, Subscriber
from ..frames import Frame, resync_frame
from ..metrics import Metrics
from . import Subscription
from .clock import Barriers, Clock, ClusterTime
from .replay import ReplayBuffer


class LocalHub:
    """Publishes straight into this process's broker, keeps recent frames in a ``ReplayBuffer``.

    Publishing is synchronous, so a subscription taken between two changes misses nothing and
    receives nothing twice.
    """

    def __init__(self, broker: Broker, replay: ReplayBuffer, metrics: Metrics) -> None:
        self.broker = broker
        self.replay = replay
        self.metrics = metrics
        self.clock = Clock()
        self._position = ""
        self._barriers = Barriers()

    @property
    def position(self) -> str:
        return self._position

    def start(self, position: str | None, start_time: ClusterTime | None) -> None:
        if start_time is not None:
            self.clock = Clock(start_time, set())
        if position is not None:
            self._position = position

    def publish(self, position: str, cluster_time: ClusterTime | None, frames: Sequence[Frame]) -> None:
        self._position = position
        self.clock.advance(cluster_time, position)
        self._barriers.advanced(self.clock)
        for frame in frames:
            self.replay.record(frame)
            delivered = self.broker.publish(frame)
            if delivered:
                self.metrics.labelled(self.metrics.events_out, frame.event_type).inc(delivered)

    def idle(self, position: str | None) -> None:
        if position is not None:
            self._position = position
        self._barriers.idle()

    def reset(self, reason: str) -> None:
        self.replay.forget()
        position = self._position
        self.broker.announce(lambda flow_id: resync_frame(flow_id, reason, event_id=position))

    async def subscribe(
        self,
        flow_id: str,
        types: frozenset[str] | None,
        *,
        held: bool,
        subject: str,
        replay_after: str | None = None,
    ) -> Subscription:
        backlog = None if replay_after is None else self.replay.after(flow_id, replay_after)
        subscriber = self.broker.subscribe(flow_id, types, held=held, subject=subject)
        return Subscription(subscriber, backlog, self.clock.copy())

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.broker.unsubscribe(subscriber)

    def barrier(self, after: ClusterTime | None) -> asyncio.Future[None]:
        return self._barriers.add(after, self.clock)
