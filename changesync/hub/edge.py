"""``RedisHub``: the delivering side of the Redis hub, in every process that serves SSE (an *edge*).

An edge receives, on one pub/sub connection, the control channel (ticks, resets, epochs) and the
channels of the flows its clients watch, and nothing else. Messages come in the order Redis
published them, so a tick arrives after the frames published before it. Each flow's frames carry
their sequence numbers and the number of the flow's previous frame: an edge that sees a frame
whose predecessor is not the last one it delivered fills the gap from the flow's history (a Redis
stream); when the history no longer holds it, the flow's clients are cut off with a resumable
``RESYNC`` and come back by their last event id. Reconnecting after a lost connection (Redis
restarted, or cut off a slow edge) fills every flow's gap the same way. A new epoch (Redis lost its
data, or its history diverged) cuts every client off: their ids resume from the oplog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from ..codec import EventId
from ..delivering.broadcast import Broker, Subscriber
from ..errors import HubUnavailableError
from ..frames import Draft, Frame, resync_frame
from ..metrics import Metrics
from . import Subscription
from .clock import Barriers, Clock, ClusterTime
from .keys import INGEST_GROUP, Keys
from .scripts import PUBLISH_EVENT
from .wire import Received, decode_blob, decode_message, decode_notice

logger = logging.getLogger(__name__)

# An edge keeps receiving a flow for this long after its last client left (clients reconnect).
FEED_LINGER_S = 30.0
# History entries read at once when a client's resume is looked up, or a gap is filled.
HISTORY_PAGE = 200
# How long a join waits for the hub (its connection, the flow's feed) before it is refused with 503.
JOIN_WAIT_S = 5.0
# Waits between attempts to reach Redis again.
RECONNECT_INITIAL_S = 0.1
RECONNECT_MAXIMUM_S = 5.0
# Idle notices a snapshot's barrier waits for: one more than in-process, for the delay between the
# poll that came back empty and its notice reaching this edge (see ``hub.clock``).
IDLE_NOTICES_TO_SETTLE = 3


def _stream_order(stream_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = stream_id.partition("-")
    return int(milliseconds), int(sequence or 0)


@dataclass(slots=True)
class Feed:
    """What this edge has delivered of one flow."""

    flow_id: str
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    last_stream_id: str = "0-0"
    last_seq: int | None = None
    """``None``: nothing delivered yet, so the next frame's predecessor is not checked."""
    idle_since: float | None = None


class RedisHub:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        broker: Broker,
        metrics: Metrics,
        *,
        history_per_flow: int,
        history_ttl_ms: int,
        record_ttl_ms: int,
        retry_ms: int,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.broker = broker
        self.metrics = metrics
        self.history_per_flow = history_per_flow
        self.history_ttl_ms = history_ttl_ms
        self.record_ttl_ms = record_ttl_ms
        self.retry_ms = retry_ms
        self.clock = Clock()
        self.epoch: str | None = None
        self.connected = False
        self.last_error: str | None = None
        self._position = ""
        self._reset_seq = 0
        self._connected_before = False
        self._epoch_started = False
        """Whether the epoch's watcher told its position: until then, what it will publish is unknown."""
        self._barriers = Barriers(idle_notices=IDLE_NOTICES_TO_SETTLE)
        self._feeds: dict[str, Feed] = {}
        self._pubsub: PubSub | None = None
        self._ready = asyncio.Event()
        self._publish_event = redis.register_script(PUBLISH_EVENT)

    @property
    def position(self) -> str:
        return self._position

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    # --- the connection -----------------------------------------------------------------------

    async def run(self) -> None:
        delay_s = RECONNECT_INITIAL_S
        while True:
            try:
                await self._session()
            except (RedisError, OSError) as exc:
                cause = f"{type(exc).__name__}: {exc}"
                if cause != self.last_error:
                    logger.warning("the hub's connection to Redis failed (%s); reconnecting", cause)
                self.last_error = cause
            finally:
                if self.connected:
                    delay_s = RECONNECT_INITIAL_S  # it was up: try again soon
                self.connected = False
                self._ready.clear()
                if self._pubsub is not None:
                    with contextlib.suppress(RedisError, OSError):
                        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
                    self._pubsub = None
                for feed in self._feeds.values():
                    feed.ready.clear()
            await asyncio.sleep(delay_s)
            delay_s = min(RECONNECT_MAXIMUM_S, delay_s * 2)

    async def _session(self) -> None:
        pubsub = self.redis.pubsub()
        self._pubsub = pubsub
        await pubsub.subscribe(self.keys.control, *(self.keys.channel(flow_id) for flow_id in self._feeds))
        next_sweep = time.monotonic() + FEED_LINGER_S
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is not None:
                await self._handle(message)
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + FEED_LINGER_S
                await self._sweep(now)

    async def _handle(self, message: dict[str, Any]) -> None:
        kind, channel = message["type"], message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else channel
        if kind == "subscribe":
            if channel == self.keys.control:
                await self._joined_control()
            elif (feed := self._feed_of(channel)) is not None:
                await self._catch_up(feed)
                feed.ready.set()
            return
        if kind != "message":
            return
        if channel == self.keys.control:
            self._on_notice(decode_notice(message["data"]))
            return
        feed = self._feed_of(channel)
        if feed is not None and feed.ready.is_set():
            await self._on_frame(feed, decode_message(message["data"]))

    def _feed_of(self, channel: str) -> Feed | None:
        prefix = self.keys.channel_prefix
        return self._feeds.get(channel[len(prefix) :]) if channel.startswith(prefix) else None

    async def _joined_control(self) -> None:
        """Subscribed (again) to the control channel: take the deployment's epoch and last reset."""
        raw: Any = await self.redis.hgetall(self.keys.meta)
        meta = {key.decode(): value.decode() for key, value in raw.items()}
        epoch = meta.get("epoch")
        if epoch is not None:
            if self.epoch is not None and epoch != self.epoch:
                self._new_epoch(epoch)
            self.epoch = epoch
            reset_seq = int(meta.get("reset_seq", 0))
            if reset_seq > self._reset_seq and self._connected_before:
                # Resets published while this edge was away.
                self._announce(meta.get("reset_reason", "history-lost"), self._position)
            self._reset_seq = max(self._reset_seq, reset_seq)
            if token := meta.get("token"):
                self._position = f"{token}~{epoch}.{meta.get('seq', 0)}"
                self._epoch_started = True
        self.connected = True
        self._connected_before = True
        self.last_error = None
        self._update_ready()

    def _update_ready(self) -> None:
        if self.connected and self.epoch is not None and self._epoch_started:
            self._ready.set()
        else:
            self._ready.clear()

    # --- notices and frames -------------------------------------------------------------------

    def _on_notice(self, notice: list[Any]) -> None:
        kind, epoch = notice[0], notice[1]
        if kind == "E":
            if epoch != self.epoch:
                self._new_epoch(epoch)
            return
        if epoch != self.epoch:
            self._new_epoch(epoch)
        if kind == "T":
            _, _, identifier, token, t, i, idle = notice
            self._position = identifier
            if not self._epoch_started:
                self._epoch_started = True
                self._update_ready()
            if t:
                self.clock.advance((int(t), int(i)), token)
                self._barriers.advanced(self.clock)
            if idle:
                self._barriers.idle()
        elif kind == "R":
            _, _, identifier, reason, seq = notice
            self._reset_seq = max(self._reset_seq, int(seq))
            self._position = identifier
            self._announce(reason, identifier)

    def _new_epoch(self, epoch: str) -> None:
        """Redis's history is not the one this edge followed: every client starts over by its id."""
        if self.epoch is not None:
            logger.warning("the hub's epoch changed (%s -> %s): its clients reconnect and resume", self.epoch, epoch)
            self._cut(self.broker.subscribers())
            for feed in self._feeds.values():
                feed.last_stream_id, feed.last_seq = "0-0", None
        self.epoch = epoch
        self._reset_seq = 0
        # Until its watcher's first tick: that tick's cluster time is where its live stream begins.
        self._epoch_started = False
        self._update_ready()

    def _announce(self, reason: str, identifier: str) -> None:
        self.broker.announce(lambda flow_id: resync_frame(flow_id, reason, event_id=identifier))
        self.metrics.labelled(self.metrics.resyncs, reason).inc(self.broker.subscriber_count)

    def _cut(self, subscribers: Iterator[Subscriber]) -> None:
        interrupted = self.metrics.labelled(self.metrics.resyncs, "interrupted")
        for subscriber in subscribers:
            farewell = resync_frame(subscriber.flow_id, "interrupted", retry_ms=self.retry_ms)
            subscriber.close("interrupted", farewell)
            interrupted.inc()

    async def _on_frame(self, feed: Feed, received: Received) -> None:
        if _stream_order(received.stream_id) <= _stream_order(feed.last_stream_id):
            return  # had it already (from the history, while catching up)
        if feed.last_seq is not None and received.frame.prev_seq != feed.last_seq:
            await self._catch_up(feed, upto=received.stream_id)
            if _stream_order(received.stream_id) <= _stream_order(feed.last_stream_id):
                return
        self._deliver(feed, received)

    def _deliver(self, feed: Feed, received: Received) -> None:
        frame = received.frame
        feed.last_stream_id, feed.last_seq = received.stream_id, frame.seq
        if received.cluster_time is not None:
            self.clock.advance(received.cluster_time, frame.token)
            self._barriers.advanced(self.clock)
        delivered = self.broker.publish(frame)
        if delivered:
            self.metrics.labelled(self.metrics.events_out, frame.event_type).inc(delivered)

    async def _catch_up(self, feed: Feed, *, upto: str = "+") -> None:
        """Deliver the flow's frames after the last one delivered, from its history; cut its clients
        off when the history no longer holds what follows that one."""
        key = self.keys.history(feed.flow_id)
        if feed.last_seq is None:
            # Nothing delivered yet: start from the history's latest frame.
            latest = await self._read(key, newest_first=True, start="-", end="+", count=1)
            if latest:
                feed.last_stream_id, feed.last_seq = latest[0].stream_id, latest[0].frame.seq
            return
        start = f"({feed.last_stream_id}"
        while True:
            entries = await self._read(key, newest_first=False, start=start, end=upto, count=HISTORY_PAGE)
            for received in entries:
                if received.frame.prev_seq != feed.last_seq:
                    logger.warning("flow %s: the hub's history no longer holds what its clients missed", feed.flow_id)
                    self._cut(s for s in self.broker.subscribers() if s.flow_id == feed.flow_id)
                    feed.last_seq = None
                    await self._catch_up(feed)
                    return
                self._deliver(feed, received)
            if len(entries) < HISTORY_PAGE:
                return
            start = f"({feed.last_stream_id}"

    async def _sweep(self, now: float) -> None:
        """Stop receiving flows nobody here has watched for a while."""
        for flow_id, feed in list(self._feeds.items()):
            if self.broker.has_subscribers(flow_id):
                feed.idle_since = None
            elif feed.idle_since is None:
                feed.idle_since = now
            elif now - feed.idle_since >= FEED_LINGER_S and self._pubsub is not None:
                del self._feeds[flow_id]
                await self._pubsub.unsubscribe(self.keys.channel(flow_id))

    # --- the delivering side ------------------------------------------------------------------

    async def subscribe(
        self,
        flow_id: str,
        types: frozenset[str] | None,
        *,
        held: bool,
        subject: str,
        replay_after: EventId | None = None,
    ) -> Subscription:
        feed = await self._feed(flow_id)
        subscriber = self.broker.subscribe(flow_id, types, held=held, subject=subject)
        feed.idle_since = None
        bound, clock = feed.last_stream_id, self.clock.copy()
        backlog = None
        if (
            replay_after is not None
            and replay_after.seq is not None
            and replay_after.epoch == self.epoch
            and replay_after.seq >= self._reset_seq
        ):
            try:
                backlog = await self._history_after(flow_id, replay_after.seq, bound)
            except (RedisError, OSError):
                backlog = None  # the oplog then
        return Subscription(subscriber, backlog, clock)

    async def _feed(self, flow_id: str) -> Feed:
        try:
            async with asyncio.timeout(JOIN_WAIT_S):
                await self._ready.wait()
                feed = self._feeds.get(flow_id)
                if feed is None:
                    feed = self._feeds[flow_id] = Feed(flow_id)
                    if self._pubsub is not None:
                        await self._pubsub.subscribe(self.keys.channel(flow_id))
                await feed.ready.wait()
        except TimeoutError:
            raise HubUnavailableError(self.last_error or "the hub is not connected to Redis") from None
        except (RedisError, OSError) as exc:
            raise HubUnavailableError(f"Redis: {exc}") from exc
        return feed

    async def _history_after(self, flow_id: str, seq: int, bound: str) -> list[Frame] | None:
        """The flow's frames numbered above ``seq`` up to ``bound``, or ``None`` when the history may
        have let one of them go."""
        if bound == "0-0":
            last: Any = await self.redis.get(self.keys.last(flow_id))
            return [] if last is None or int(last) <= seq else None
        newest_first: list[Frame] = []
        end = bound
        while True:
            entries = await self._read(
                self.keys.history(flow_id), newest_first=True, start="-", end=end, count=HISTORY_PAGE
            )
            for received in entries:
                frame = received.frame
                if frame.seq <= seq:
                    return newest_first[::-1]
                newest_first.append(frame)
            if len(entries) < HISTORY_PAGE:
                # Past the oldest frame kept: complete only if its predecessor is at or before ``seq``.
                if newest_first and newest_first[-1].prev_seq <= seq:
                    return newest_first[::-1]
                return None
            end = f"({entries[-1].stream_id}"

    async def _read(self, key: str, *, newest_first: bool, start: str, end: str, count: int) -> list[Received]:
        """Entries of a history stream, from ``start`` to ``end`` (or the other way round)."""
        raw: Any
        if newest_first:
            raw = await self.redis.xrevrange(key, max=end, min=start, count=count)
        else:
            raw = await self.redis.xrange(key, min=start, max=end, count=count)
        return [decode_blob(stream_id.decode(), fields[b"m"]) for stream_id, fields in raw or ()]

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.broker.unsubscribe(subscriber)

    def barrier(self, after: ClusterTime | None) -> asyncio.Future[None]:
        return self._barriers.add(after, self.clock)

    async def may_have_lost_published(self, flow_id: str, after: EventId) -> bool:
        if after.epoch != self.epoch or after.seq is None:
            return True
        try:
            latest: Any = await self.redis.get(self.keys.published(flow_id))
        except (RedisError, OSError):
            return True
        return latest is not None and int(latest) > after.seq

    async def publish_event(self, draft: Draft) -> str:
        event_id = await self._publish(draft, [], [])
        assert event_id is not None
        return event_id

    async def publish_ingested(self, draft: Draft, entry_id: str) -> str | None:
        """Publish an event read from the ingest stream, acknowledging its entry in the same step;
        its id, or ``None`` when the entry was acknowledged (so published) already."""
        return await self._publish(draft, [self.keys.ingest], [INGEST_GROUP, entry_id])

    async def _publish(self, draft: Draft, extra_keys: list[str], extra_args: list[str]) -> str | None:
        keys = self.keys
        flow_id = draft.flow_id
        try:
            reply = await self._publish_event(
                keys=[keys.meta, keys.history(flow_id), keys.last(flow_id), keys.published(flow_id), *extra_keys],
                args=[
                    flow_id,
                    draft.event_type,
                    draft.payload,
                    draft.collection,
                    draft.operation,
                    draft.document_key,
                    self.history_per_flow,
                    self.history_ttl_ms,
                    self.record_ttl_ms,
                    keys.channel_prefix,
                    *extra_args,
                ],
            )
        except (RedisError, OSError) as exc:
            raise HubUnavailableError(f"Redis: {exc}") from exc
        if reply[0] == b"duplicate":
            return None
        if reply[0] != b"ok":
            raise HubUnavailableError("the deployment's change stream has no position yet")
        return str(reply[1].decode())
