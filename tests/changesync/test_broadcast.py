import asyncio

import pytest

from changesync.broadcast import Broker


class TestBroker:
    def test_publish_reaches_only_the_flow(self):
        """A frame goes to every subscriber of its flow and to no other flow."""
        broker = Broker(max_queue=10)
        a1, a2, b = broker.subscribe("a"), broker.subscribe("a"), broker.subscribe("b")
        assert broker.publish("a", "SYNC_CANVAS", b"frame") == 2
        assert (a1.drain(), a2.drain(), b.queued) == (b"frame", b"frame", 0)

    def test_same_bytes_object_is_shared(self):
        """Fan-out queues one encoded object, not a copy per subscriber."""
        broker = Broker(max_queue=10)
        subscribers = [broker.subscribe("a") for _ in range(3)]
        frame = b"x" * 100
        broker.publish("a", "T", frame)
        assert all(s.drain() is frame for s in subscribers)

    def test_type_selection(self):
        """A subscriber that asked for some types receives only those."""
        broker = Broker(max_queue=10)
        logs = broker.subscribe("a", frozenset({"LOG_STREAM"}))
        broker.publish("a", "SYNC_CANVAS", b"c")
        broker.publish("a", "LOG_STREAM", b"l")
        assert logs.drain() == b"l"

    def test_overflow_marks_and_reports_once(self):
        """A full queue overflows the subscriber once, frees its memory and spares the others."""
        overflowed = []
        broker = Broker(max_queue=2, on_overflow=overflowed.append)
        slow, fast = broker.subscribe("a"), broker.subscribe("a")
        for index in range(5):
            broker.publish("a", "T", b"%d" % index)
            fast.drain()
        assert slow.overflowed and slow.queued == 0
        assert overflowed == [slow]
        assert not fast.overflowed

    def test_announce_ignores_type_selection(self):
        """Control frames reach every subscriber, whatever types it selected."""
        broker = Broker(max_queue=10)
        logs = broker.subscribe("a", frozenset({"LOG_STREAM"}))
        broker.announce(lambda flow_id: f"resync {flow_id}".encode())
        assert logs.drain() == b"resync a"

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


class TestSubscriber:
    async def test_wait_wakes_on_publish_and_drains_in_order(self):
        """A waiting subscriber wakes on the next frame and drains frames in order as one chunk."""
        broker = Broker(max_queue=10)
        subscriber = broker.subscribe("a")
        waiter = asyncio.create_task(subscriber.wait())
        await asyncio.sleep(0)
        assert not waiter.done()
        broker.publish("a", "T", b"1")
        broker.publish("a", "T", b"2")
        await asyncio.wait_for(waiter, 1)
        assert subscriber.drain() == b"12"

    async def test_close_delivers_farewell_then_finishes(self):
        """Closing queues the farewell after pending frames, then the subscription is finished."""
        broker = Broker(max_queue=10)
        subscriber = broker.subscribe("a")
        broker.publish("a", "T", b"1")
        subscriber.close("shutdown", b"bye")
        await asyncio.wait_for(subscriber.wait(), 1)
        assert subscriber.drain() == b"1bye"
        assert subscriber.finished
        assert not subscriber.offer(b"late")
