"""The broker and its subscribers: fan-out, type selection, holding, overflow and its shedding."""

import asyncio

import orjson
import pytest

from changesync.delivering.broadcast import Broker, make_compactor
from changesync.frames import Frame, message


def frame(data: bytes, event_type: str = "T", position: str = "", flow_id: str = "a") -> Frame:
    """A frame that names no document (a control frame when it has a type, a heartbeat when not)."""
    return Frame(flow_id, event_type, data, position)


def change(collection: str, document_id: object, position: str, operation: str = "update") -> Frame:
    """A change's frame, as the producer encodes it, for flow ``a``."""
    payload = {
        "type": "S",
        "flowId": "a",
        "collection": collection,
        "operation": operation,
        "documentId": document_id,
        "document": {"_id": document_id, "at": position},
        "patch": [],
        "clusterTime": None,
        "wallTime": None,
    }
    data = message("S", payload, event_id=position)
    return Frame("a", "S", data, position, collection, operation, orjson.dumps(document_id).decode())


class TestBroker:
    def test_publish_reaches_only_the_flow(self):
        """A delivery goes to every subscriber of its flow and to no other flow."""
        broker = Broker(max_queue=10)
        a1, a2, b = broker.subscribe("a"), broker.subscribe("a"), broker.subscribe("b")
        assert broker.publish(frame(b"frame")) == 2
        assert (a1.drain(), a2.drain(), b.queued) == (b"frame", b"frame", 0)

    def test_same_bytes_object_is_shared(self):
        """Fan-out queues one encoded object, not a copy per subscriber."""
        broker = Broker(max_queue=10)
        subscribers = [broker.subscribe("a") for _ in range(3)]
        data = b"x" * 100
        broker.publish(frame(data))
        assert all(s.drain() is data for s in subscribers)

    def test_type_selection(self):
        """A subscriber that asked for some types receives only those."""
        broker = Broker(max_queue=10)
        logs = broker.subscribe("a", frozenset({"LOG_STREAM"}))
        broker.publish(frame(b"c", "SYNC_CANVAS"))
        broker.publish(frame(b"l", "LOG_STREAM"))
        assert logs.drain() == b"l"

    def test_overflow_marks_and_reports_once(self):
        """A full queue overflows the subscriber once, frees its memory and spares the others."""
        overflowed = []
        broker = Broker(max_queue=2, on_overflow=overflowed.append)
        slow, fast = broker.subscribe("a"), broker.subscribe("a")
        for index in range(5):
            broker.publish(frame(b"%d" % index))
            fast.drain()
        assert slow.overflowed and slow.queued == 0
        assert overflowed == [slow]
        assert not fast.overflowed

    def test_announce_ignores_type_selection(self):
        """Control deliveries reach every subscriber, whatever types it selected."""
        broker = Broker(max_queue=10)
        logs = broker.subscribe("a", frozenset({"LOG_STREAM"}))
        broker.announce(lambda flow_id: frame(f"resync {flow_id}".encode(), "RESYNC"))
        assert logs.drain() == b"resync a"

    async def test_held_subscriber_queues_without_waking(self):
        """A held subscriber queues deliveries but is only woken by release()."""
        broker = Broker(max_queue=10)
        subscriber = broker.subscribe("a", held=True)
        waiter = asyncio.create_task(subscriber.wait())
        broker.publish(frame(b"1"))
        await asyncio.sleep(0)
        assert not waiter.done() and subscriber.queued == 1
        subscriber.release()
        await asyncio.wait_for(waiter, 1)
        assert subscriber.drain() == b"1"

    def test_tick_reaches_only_idle_subscribers(self):
        """A heartbeat goes to subscribers that got nothing since the last tick, never to held ones."""
        broker = Broker(max_queue=10)
        idle, busy, held = broker.subscribe("a"), broker.subscribe("b"), broker.subscribe("c", held=True)
        broker.tick(frame(b"hb0"))  # the first tick only starts the interval for new subscribers
        idle.drain(), busy.drain()
        broker.publish(frame(b"event", flow_id="b"))
        busy.drain()
        broker.tick(frame(b"hb"))
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
    def shape(self, frames: list[Frame]) -> list[tuple[str, str, int]]:
        """(position, operation, how many changes it stands for) of each frame."""
        shapes = []
        for item in frames:
            payload = item.payload()
            shapes.append((item.position, payload["operation"], payload.get("coalesced", payload.get("skipped", 1))))
        return shapes

    def test_coalesce_collapse_and_keep(self):
        """Updates of one document merge at the latest position, old log chunks collapse, runs stay."""
        compact = make_compactor(POLICIES)
        queue = [change("boards", "x", "1")]
        queue += [change("logs", i, str(10 + i), "insert") for i in range(12)]
        queue += [change("runs", "r", "30"), change("boards", "x", "31"), change("boards", "y", "32")]
        queue += [frame(b": heartbeat\n\n", "", "33")]
        compacted = compact(queue)
        assert self.shape(compacted) == [
            ("13", "skipped", 4),
            *((str(10 + i), "insert", 1) for i in range(4, 12)),
            ("30", "update", 1),
            ("31", "replace", 2),
            ("32", "update", 1),
        ]
        coalesced = compacted[-2].payload()
        assert coalesced["document"] == {"_id": "x", "at": "31"} and coalesced["patch"] is None
        assert compacted[-1] is queue[-2], "a change that needs no shedding stays as it was"

    def test_a_coalesced_delete_stays_a_delete(self):
        """The latest change of a document decides: a delete after updates is still a delete."""
        compacted = make_compactor(POLICIES)([change("boards", "x", "1"), change("boards", "x", "2", "delete")])
        assert self.shape(compacted) == [("2", "delete", 2)]

    def test_positions_stay_in_order(self):
        """Compaction never moves an id backwards."""
        compact = make_compactor(POLICIES)
        queue = [change("boards", i % 3, str(i)) for i in range(30)]
        positions = [int(item.position) for item in compact(queue)]
        assert positions == sorted(positions)

    def test_subscriber_sheds_before_it_is_cut_off(self):
        """A full queue of one document's updates coalesces instead of overflowing; only what cannot shed overflows."""
        broker = Broker(max_queue=4, compact=make_compactor(POLICIES))
        subscriber = broker.subscribe("a")
        for i in range(100):
            broker.publish(change("boards", "x", str(i)))
        assert not subscriber.overflowed and subscriber.queued <= 4
        for i in range(100, 110):
            broker.publish(change("runs", i, str(i)))
        assert subscriber.overflowed


class TestSubscriber:
    async def test_wait_wakes_on_publish_and_drains_in_order(self):
        """A waiting subscriber wakes on the next delivery and drains them in order as one chunk."""
        broker = Broker(max_queue=10)
        subscriber = broker.subscribe("a")
        waiter = asyncio.create_task(subscriber.wait())
        await asyncio.sleep(0)
        assert not waiter.done()
        broker.publish(frame(b"1"))
        broker.publish(frame(b"2"))
        await asyncio.wait_for(waiter, 1)
        assert subscriber.drain() == b"12"

    async def test_close_delivers_farewell_then_finishes(self):
        """Closing queues the farewell after pending deliveries, then the subscription is finished."""
        broker = Broker(max_queue=10)
        subscriber = broker.subscribe("a")
        broker.publish(frame(b"1"))
        broker.close_all("shutdown", frame(b"bye"))
        await asyncio.wait_for(subscriber.wait(), 1)
        assert subscriber.drain() == b"1bye"
        assert subscriber.finished
        assert not subscriber.offer(frame(b"late"))

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
        broker.publish(frame(b"1"))
        await asyncio.wait_for(waiter, 1)
        assert subscriber.drain() == b"1"

    async def test_wait_returns_at_once_when_there_is_work(self):
        """Nothing is waited for when deliveries are queued or the subscription has overflowed."""
        broker = Broker(max_queue=1)
        subscriber = broker.subscribe("a")
        broker.publish(frame(b"1"))
        await asyncio.wait_for(subscriber.wait(), 1)
        broker.publish(frame(b"2"))
        assert subscriber.overflowed
        await asyncio.wait_for(subscriber.wait(), 1)
