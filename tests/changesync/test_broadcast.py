import asyncio

import pytest

from changesync.broadcast import Broker, Delivery, make_compactor
from filters import ChangeEvent


def delivery(data: bytes, event_type: str = "T", position: str = "", event: ChangeEvent | None = None) -> Delivery:
    return Delivery(event_type, data, position, event)


def change(collection: str, document_id: object, operation: str = "update") -> ChangeEvent:
    return ChangeEvent(collection=collection, operation=operation, document_id=document_id, flow_id="a")  # type: ignore[arg-type]


class TestBroker:
    def test_publish_reaches_only_the_flow(self):
        """A delivery goes to every subscriber of its flow and to no other flow."""
        broker = Broker(max_queue=10)
        a1, a2, b = broker.subscribe("a"), broker.subscribe("a"), broker.subscribe("b")
        assert broker.publish("a", delivery(b"frame")) == 2
        assert (a1.drain(), a2.drain(), b.queued) == (b"frame", b"frame", 0)

    def test_same_bytes_object_is_shared(self):
        """Fan-out queues one encoded object, not a copy per subscriber."""
        broker = Broker(max_queue=10)
        subscribers = [broker.subscribe("a") for _ in range(3)]
        frame = b"x" * 100
        broker.publish("a", delivery(frame))
        assert all(s.drain() is frame for s in subscribers)

    def test_type_selection(self):
        """A subscriber that asked for some types receives only those."""
        broker = Broker(max_queue=10)
        logs = broker.subscribe("a", frozenset({"LOG_STREAM"}))
        broker.publish("a", delivery(b"c", "SYNC_CANVAS"))
        broker.publish("a", delivery(b"l", "LOG_STREAM"))
        assert logs.drain() == b"l"

    def test_overflow_marks_and_reports_once(self):
        """A full queue overflows the subscriber once, frees its memory and spares the others."""
        overflowed = []
        broker = Broker(max_queue=2, on_overflow=overflowed.append)
        slow, fast = broker.subscribe("a"), broker.subscribe("a")
        for index in range(5):
            broker.publish("a", delivery(b"%d" % index))
            fast.drain()
        assert slow.overflowed and slow.queued == 0
        assert overflowed == [slow]
        assert not fast.overflowed

    def test_announce_ignores_type_selection(self):
        """Control deliveries reach every subscriber, whatever types it selected."""
        broker = Broker(max_queue=10)
        logs = broker.subscribe("a", frozenset({"LOG_STREAM"}))
        broker.announce(lambda flow_id: delivery(f"resync {flow_id}".encode(), "RESYNC"))
        assert logs.drain() == b"resync a"

    async def test_held_subscriber_queues_without_waking(self):
        """A held subscriber queues deliveries but is only woken by release()."""
        broker = Broker(max_queue=10)
        subscriber = broker.subscribe("a", held=True)
        waiter = asyncio.create_task(subscriber.wait())
        broker.publish("a", delivery(b"1"))
        await asyncio.sleep(0)
        assert not waiter.done() and subscriber.queued == 1
        subscriber.release()
        await asyncio.wait_for(waiter, 1)
        assert subscriber.drain() == b"1"

    def test_tick_reaches_only_idle_subscribers(self):
        """A heartbeat goes to subscribers that got nothing since the last tick, never to held ones."""
        broker = Broker(max_queue=10)
        idle, busy, held = broker.subscribe("a"), broker.subscribe("b"), broker.subscribe("c", held=True)
        broker.tick(delivery(b"hb0"))  # the first tick only starts the interval for new subscribers
        idle.drain(), busy.drain()
        broker.publish("b", delivery(b"event"))
        busy.drain()
        broker.tick(delivery(b"hb"))
        assert (idle.drain(), busy.queued, held.queued) == (b"hb", 0, 0)

    def test_unsubscribe_forgets_empty_flows(self):
        """The last subscriber leaving removes the flow."""
        broker = Broker(max_queue=10)
        subscriber = broker.subscribe("a")
        broker.unsubscribe(subscriber)
        broker.unsubscribe(subscriber)
        assert not broker.has_subscribers("a") and broker.subscriber_count == 0

    def test_invalid_queue_size(self):
        """The queue bound is validated when the broker is built."""
        with pytest.raises(ValueError, match="max_queue must be >= 1, got 0"):
            Broker(max_queue=0)


POLICIES = {"boards": "coalesce", "logs": "collapse", "runs": "keep"}


class TestCompaction:
    def compactor(self):
        return make_compactor(
            POLICIES,
            coalesced=lambda event, position, count: delivery(f"C{count}@{position}".encode(), "S", position, event),
            collapsed=lambda event, position, skipped: delivery(
                f"L{skipped}@{position}".encode(), "L", position, event
            ),
        )

    def test_coalesce_collapse_and_keep(self):
        """Updates of one document merge at the latest position, old log chunks collapse, runs stay."""
        compact = self.compactor()
        queue = [delivery(b"b1", "S", "1", change("boards", "x"))]
        queue += [delivery(b"l%d" % i, "L", str(10 + i), change("logs", i, "insert")) for i in range(12)]
        queue += [delivery(b"r", "R", "30", change("runs", "r")), delivery(b"b2", "S", "31", change("boards", "x"))]
        queue += [delivery(b"b3", "S", "32", change("boards", "y")), delivery(b"", "", "33")]
        frames = [d.frame for d in compact(queue)]
        assert frames == [b"L4@13"] + [b"l%d" % i for i in range(4, 12)] + [b"r", b"C2@31", b"b3"]

    def test_positions_stay_in_order(self):
        """Compaction never moves an id backwards."""
        compact = self.compactor()
        queue = [delivery(b"", "S", str(i), change("boards", i % 3)) for i in range(30)]
        positions = [int(d.position) for d in compact(queue)]
        assert positions == sorted(positions)

    def test_subscriber_sheds_before_it_is_cut_off(self):
        """A full queue of one document's updates coalesces instead of overflowing; only what cannot shed overflows."""
        broker = Broker(max_queue=4, compact=self.compactor())
        subscriber = broker.subscribe("a")
        for i in range(100):
            broker.publish("a", delivery(b"", "S", str(i), change("boards", "x")))
        assert not subscriber.overflowed and subscriber.queued <= 4
        for i in range(100, 110):
            broker.publish("a", delivery(b"", "R", str(i), change("runs", i)))
        assert subscriber.overflowed


class TestSubscriber:
    async def test_wait_wakes_on_publish_and_drains_in_order(self):
        """A waiting subscriber wakes on the next delivery and drains them in order as one chunk."""
        broker = Broker(max_queue=10)
        subscriber = broker.subscribe("a")
        waiter = asyncio.create_task(subscriber.wait())
        await asyncio.sleep(0)
        assert not waiter.done()
        broker.publish("a", delivery(b"1"))
        broker.publish("a", delivery(b"2"))
        await asyncio.wait_for(waiter, 1)
        assert subscriber.drain() == b"12"

    async def test_close_delivers_farewell_then_finishes(self):
        """Closing queues the farewell after pending deliveries, then the subscription is finished."""
        broker = Broker(max_queue=10)
        subscriber = broker.subscribe("a")
        broker.publish("a", delivery(b"1"))
        broker.close_all("shutdown", delivery(b"bye"))
        await asyncio.wait_for(subscriber.wait(), 1)
        assert subscriber.drain() == b"1bye"
        assert subscriber.finished
        assert not subscriber.offer(delivery(b"late"))

    async def test_one_waiter_and_a_cancelled_wait_leaves_none(self):
        """A second concurrent waiter is refused; after a cancelled wait the next one still wakes."""
        broker = Broker(max_queue=10)
        subscriber = broker.subscribe("a")
        waiter = asyncio.create_task(subscriber.wait())
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError):
            await subscriber.wait()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        waiter = asyncio.create_task(subscriber.wait())
        await asyncio.sleep(0)
        broker.publish("a", delivery(b"1"))
        await asyncio.wait_for(waiter, 1)
        assert subscriber.drain() == b"1"

    async def test_wait_returns_at_once_when_there_is_work(self):
        """Nothing is waited for when deliveries are queued or the subscription has overflowed."""
        broker = Broker(max_queue=1)
        subscriber = broker.subscribe("a")
        broker.publish("a", delivery(b"1"))
        await asyncio.wait_for(subscriber.wait(), 1)
        broker.publish("a", delivery(b"2"))
        assert subscriber.overflowed
        await asyncio.wait_for(subscriber.wait(), 1)
