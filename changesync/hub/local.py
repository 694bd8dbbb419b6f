"""``LocalHub``: the in-process hub, for a single process that watches and serves."""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict
from collections.abc import Sequence

from ..codec import EventId, event_id
from ..delivering.broadcast import Broker, Subscriber
from ..errors import HubUnavailableError
from ..frames import Draft, resync_frame
from ..metrics import Metrics
from . import Subscription
from .clock import Barriers, Clock, ClusterTime
from .replay import ReplayBuffer

# Flows whose latest published event is remembered; beyond it the oldest are forgotten (and then
# treated as having had one just now, which can only cause a RESYNC, never a gap).
MAX_PUBLISHED_FLOWS = 1_000_000


def new_epoch() -> str:
    """A fresh epoch: ids of another epoch cannot be found in this hub's history."""
    return secrets.token_urlsafe(6)


class LocalHub:
    """Publishes straight into this process's broker, keeps recent frames in a ``ReplayBuffer``.

    Publishing is synchronous, so a subscription taken between two changes misses nothing and
    receives nothing twice. The epoch is new with every process: after a restart, ids of the last
    one resume from the oplog.
    """

    def __init__(self, broker: Broker, replay: ReplayBuffer, metrics: Metrics) -> None:
        self.broker = broker
        self.replay = replay
        self.metrics = metrics
        self.clock = Clock()
        self.epoch = new_epoch()
        self._seq = 0
        self._position = ""
        self._barriers = Barriers()
        # Flow id -> sequence number of its latest published event, least recent first.
        self._published: OrderedDict[str, int] = OrderedDict()
        self._forgot_published = 0

    @property
    def position(self) -> str:
        return event_id(self._position, self.epoch, self._seq) if self._position else ""

    def start(self, position: str | None, start_time: ClusterTime | None) -> None:
        if start_time is not None:
            self.clock = Clock(start_time, set())
        if position is not None:
            self._position = position

    def publish(self, position: str, cluster_time: ClusterTime | None, drafts: Sequence[Draft]) -> None:
        self._position = position
        self.clock.advance(cluster_time, position)
        self._barriers.advanced(self.clock)
        if drafts:
            self._seq += 1
            self._deliver(drafts, event_id(position, self.epoch, self._seq))

    def _deliver(self, drafts: Sequence[Draft], identifier: str) -> None:
        for draft in drafts:
            frame = self.replay.record(draft.framed(identifier, seq=self._seq))
            delivered = self.broker.publish(frame)
            if delivered:
                self.metrics.labelled(self.metrics.events_out, frame.event_type).inc(delivered)

    async def publish_event(self, draft: Draft) -> str:
        if not self._position:
            raise HubUnavailableError("the change stream has no position yet")
        self._seq += 1
        identifier = event_id(self._position, self.epoch, self._seq)
        self._published[draft.flow_id] = self._seq
        self._published.move_to_end(draft.flow_id)
        if len(self._published) > MAX_PUBLISHED_FLOWS:
            _, forgotten = self._published.popitem(last=False)
            self._forgot_published = max(self._forgot_published, forgotten)
        self._deliver([draft], identifier)
        return identifier

    def idle(self, position: str | None) -> None:
        if position is not None:
            self._position = position
        self._barriers.idle()

    async def drain(self) -> None:
        # Delivering is synchronous: let the subscribers' streams write meanwhile.
        await asyncio.sleep(0)

    def reset(self, reason: str) -> None:
        # The reset takes a number of its own: every id before it can no longer be replayed.
        self._seq += 1
        self.replay.forget(self._seq)
        position = self.position
        self.broker.announce(lambda flow_id: resync_frame(flow_id, reason, event_id=position))
        self.metrics.labelled(self.metrics.resyncs, reason).inc(self.broker.subscriber_count)

    async def subscribe(
        self,
        flow_id: str,
        types: frozenset[str] | None,
        *,
        held: bool,
        subject: str,
        replay_after: EventId | None = None,
    ) -> Subscription:
        backlog = None
        if replay_after is not None and replay_after.epoch == self.epoch and replay_after.seq is not None:
            backlog = self.replay.after(flow_id, replay_after.seq)
        subscriber = self.broker.subscribe(flow_id, types, held=held, subject=subject)
        return Subscription(subscriber, backlog, self.clock.copy())

    async def may_have_lost_published(self, flow_id: str, after: EventId) -> bool:
        if after.epoch != self.epoch or after.seq is None:
            return True
        latest = self._published.get(flow_id, self._forgot_published)
        return latest > after.seq

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.broker.unsubscribe(subscriber)

    def barrier(self, after: ClusterTime | None) -> asyncio.Future[None]:
        return self._barriers.add(after, self.clock)
