"""The delivery promise, on the in-memory database: every event a client missed, once, in order, or an
explicit RESYNC; a fresh connection starts with its SNAPSHOT.

The service's own parts run here (``changesync.service.build_service``: watcher, producer, hub,
joins) on ``fakes.FakeDatabase``; only the HTTP layer is left out. ``tests/integration/`` checks the
same promise through real sockets on a real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from changesync.delivering.broadcast import Subscriber
from changesync.delivering.joins import Join
from changesync.errors import HistoryLostError
from changesync.service import Service, build_service
from changesync.settings import load_settings
from fakes import FakeDatabase

# Bound on every wait; the fake database answers in microseconds.
WAIT_S = 5.0
FLOW = "f1"


@dataclass(frozen=True)
class Message:
    event: str
    id: str
    data: dict[str, Any]


def parse(chunk: bytes) -> list[Message]:
    """The messages of an SSE chunk that a browser dispatches (comments and id-only blocks are not)."""
    messages = []
    for block in chunk.decode().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            if name in ("event", "id", "data"):
                fields[name] = value
        if "data" in fields:
            messages.append(Message(fields.get("event", "message"), fields.get("id", ""), json.loads(fields["data"])))
    return messages


class Client:
    """One joined client: its prologue, then its live queue, as the SSE response sends them."""

    def __init__(self, service: Service, subscriber: Subscriber, prologue: AsyncIterator[bytes]) -> None:
        self.service = service
        self.subscriber = subscriber
        self.received: list[Message] = []
        self._read = 0
        self._prologue = prologue

    async def read_prologue(self) -> list[Message]:
        async with asyncio.timeout(WAIT_S):
            async for chunk in self._prologue:
                self.received += parse(chunk)
        return list(self.received)

    async def next(self) -> Message:
        """The next message (the prologue's first, then the live queue's)."""
        async with asyncio.timeout(WAIT_S):
            while not self.pending():
                await self.subscriber.wait()
                if self.subscriber.overflowed or self.subscriber.finished:
                    raise EOFError
                self.received += parse(self.subscriber.drain())
        return self._take()

    def pending(self) -> bool:
        return len(self.received) > self._read

    def _take(self) -> Message:
        message = self.received[self._read]
        self._read += 1
        return message

    async def until(self, count: int) -> list[Message]:
        return [await self.next() for _ in range(count)]

    @property
    def last_id(self) -> str:
        return [message.id for message in self.received[: self._read] if message.id][-1]

    def close(self) -> None:
        self.service.hub.unsubscribe(self.subscriber)


@contextlib.asynccontextmanager
async def running(database: FakeDatabase, **environ: str) -> AsyncIterator[Service]:
    settings = load_settings(
        environ={
            "CHANGESYNC_STREAM_MAX_AWAIT_TIME_MS": "10",
            **{f"CHANGESYNC_{k.upper()}": v for k, v in environ.items()},
        }
    )
    service = build_service(settings, database)
    watching = asyncio.create_task(service.watcher.run())
    try:
        async with asyncio.timeout(WAIT_S):
            await service.watcher.wait_started()
        yield service
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching


async def join(service: Service, **request: Any) -> Client:
    subscriber, plan = await service.joins.join(Join(FLOW, **request))
    client = Client(service, subscriber, service.joins.prologue(subscriber, plan))
    await client.read_prologue()
    return client


async def settled(service: Service, database: FakeDatabase) -> None:
    """Until the live stream has published everything written so far (it was idle twice since)."""
    async with asyncio.timeout(WAIT_S):
        await service.hub.barrier(None)


def node(index: int, flow: str = FLOW) -> dict[str, Any]:
    return {"_id": f"n{index}", "flowId": flow, "label": f"node {index}", "_internal": "never sent"}


def log_chunk(index: int, flow: str = FLOW) -> dict[str, Any]:
    return {"_id": f"l{index}", "flowId": flow, "seq": index, "chunk": f"word{index} "}


class TestFirstConnection:
    async def test_the_snapshot_comes_first_and_holds_the_flow(self):
        """A fresh connection's first event is its SNAPSHOT, with the flow's filtered documents."""
        database = FakeDatabase()
        database.insert("flowboards", {"_id": FLOW, "name": "board", "secrets": {"k": 1}})
        database.insert("flow_nodes", node(1))
        database.insert("flow_nodes", node(2, flow="other"))
        async with running(database) as service:
            client = await join(service)
            first = await client.next()
        assert first.event == "SNAPSHOT"
        collections = first.data["collections"]
        assert collections["flowboards"]["documents"] == [{"_id": FLOW, "name": "board"}]
        assert collections["flow_nodes"]["documents"] == [{"_id": "n1", "flowId": FLOW, "label": "node 1"}]
        assert "flow_logs" not in collections

    async def test_changes_during_the_snapshot_are_folded_or_follow_it_without_ids(self):
        """What is written while the snapshot is read is in it (canvas, log text) or follows it (log
        chunks written after the log was read, with no id, so that the client's last event id stays
        the snapshot's); nothing comes twice."""
        database = FakeDatabase()
        database.insert("flow_nodes", node(1))
        async with running(database) as service:
            await settled(service, database)

            def written_before_the_log_read() -> None:
                database.update("flow_nodes", "n1", set={"label": "moved"})
                database.insert("flow_logs", log_chunk(1))

            database.after_reads["flow_nodes"] = [written_before_the_log_read]
            # The log is read twice (its newest chunk, then that chunk's execution).
            database.after_reads["flow_logs"] = [lambda: None, lambda: database.insert("flow_logs", log_chunk(2))]
            client = await join(service)
            prologue = client.received
            database.insert("flow_logs", log_chunk(3))
            later = await client.until(len(prologue) + 1)
        snapshot, *rest = later
        assert snapshot.event == "SNAPSHOT"
        assert snapshot.data["collections"]["flow_nodes"]["documents"][0]["label"] == "moved"
        (node_log,) = snapshot.data["logs"]["flow_logs"]["nodes"]
        assert (node_log["text"], node_log["chunks"]) == ("word1 ", 1)
        logs = [message for message in rest if message.event == "LOG_STREAM"]
        assert [message.data["document"]["seq"] for message in logs] == [2, 3]
        assert logs[0].id == "" and logs[1].id, "the chunk folded behind the snapshot has no id; the next live one has"
        assert not [message for message in rest if message.event == "SYNC_CANVAS"], "the update is in the snapshot"

    async def test_a_reset_during_the_snapshot_makes_it_read_again(self):
        """A RESYNC queued while the snapshot was read means the read may predate it: it is read again,
        and the client gets a snapshot of the state after the reset, not the RESYNC."""
        database = FakeDatabase()
        database.insert("flow_nodes", node(1))
        async with running(database) as service:
            await settled(service, database)
            database.after_reads["flow_nodes"] = [lambda: database.drop("flow_nodes")]
            client = await join(service)
            first = client.received[0]
        assert first.event == "SNAPSHOT"
        assert first.data["collections"]["flow_nodes"]["documents"] == []

    async def test_a_change_too_large_for_its_frame_makes_the_snapshot_read_again(self):
        """A queued change whose frame could not carry its document cannot be folded: the next read has it."""
        database = FakeDatabase()
        database.insert("flow_nodes", node(1))
        async with running(database, limits_max_event_bytes="1024") as service:
            await settled(service, database)
            database.after_reads["flow_nodes"] = [
                lambda: database.update("flow_nodes", "n1", set={"label": "x" * 2000})
            ]
            client = await join(service)
            first = client.received[0]
        assert first.event == "SNAPSHOT"
        assert first.data["collections"]["flow_nodes"]["documents"][0]["label"] == "x" * 2000


class TestResume:
    async def test_from_the_replay_buffer(self):
        """A client that comes back with its last id gets what it missed from the hub's history, once,
        in order, without a database read."""
        database = FakeDatabase()
        async with running(database) as service:
            client = await join(service, snapshot=False)
            for index in range(3):
                database.insert("flow_logs", log_chunk(index))
            await client.until(3)
            client.close()
            for index in range(3, 6):
                database.insert("flow_logs", log_chunk(index))
            await settled(service, database)
            streams_before = database.streams_opened
            back = await join(service, last_event_id=client.last_id)
            database.insert("flow_logs", log_chunk(6))
            missed = await back.until(4)
        assert [message.data["document"]["seq"] for message in missed] == [3, 4, 5, 6]
        assert database.streams_opened == streams_before, "replayed from memory, not from the oplog"

    async def test_from_the_oplog_when_the_hub_no_longer_has_it(self):
        """Without the position in the hub's history, a catch-up reads the oplog from there and hands
        over to the live queue: every missed event once, in order, none twice."""
        database = FakeDatabase()
        async with running(database, stream_replay_per_flow="0") as service:
            client = await join(service, snapshot=False)
            database.insert("flow_logs", log_chunk(0))
            await client.until(1)
            client.close()
            for index in range(1, 5):
                database.insert("flow_logs", log_chunk(index))
            database.insert("flow_logs", log_chunk(99, flow="other"))
            await settled(service, database)
            streams_before = database.streams_opened
            back = await join(service, last_event_id=client.last_id)
            for index in range(5, 8):
                database.insert("flow_logs", log_chunk(index))
            missed = await back.until(7)
        assert [message.data["document"]["seq"] for message in missed] == [1, 2, 3, 4, 5, 6, 7]
        assert len({message.id for message in missed}) == 7
        assert database.streams_opened == streams_before + 1, "one history stream"

    async def test_from_a_heartbeat_position_in_memory(self):
        """An idle client's last id is a heartbeat's (the live position, with the hub's number): what
        followed it comes from the hub's history, without a database read."""
        database = FakeDatabase()
        async with running(database) as service:
            database.insert("flow_logs", log_chunk(0, flow="other"))
            await settled(service, database)
            position = service.hub.position
            database.insert("flow_logs", log_chunk(1))
            await settled(service, database)
            streams_before = database.streams_opened
            back = await join(service, last_event_id=position)
            assert [message.data["document"]["seq"] for message in await back.until(1)] == [1]
        assert database.streams_opened == streams_before

    async def test_from_a_heartbeat_position(self):
        """An idle client's last id is a heartbeat's (the live position): it resumes from there."""
        database = FakeDatabase()
        async with running(database, stream_replay_per_flow="0") as service:
            await settled(service, database)
            position = service.hub.position
            database.insert("flow_logs", log_chunk(1))
            back = await join(service, last_event_id=position)
            assert [message.data["document"]["seq"] for message in await back.until(1)] == [1]

    async def test_history_lost_is_a_resync_then_a_snapshot(self):
        """A position that left the oplog cannot be caught up: RESYNC history-lost, then a fresh SNAPSHOT."""
        database = FakeDatabase()
        async with running(database, stream_replay_per_flow="0") as service:
            client = await join(service, snapshot=False)
            database.insert("flow_nodes", node(1))
            await client.until(1)
            database.insert("flow_nodes", node(2))
            await settled(service, database)
            database.lost_before = len(database.oplog)
            back = await join(service, last_event_id=client.last_id)
            resync, snapshot = await back.until(2)
        assert (resync.event, resync.data["reason"], resync.data["resumable"]) == ("RESYNC", "history-lost", False)
        assert snapshot.event == "SNAPSHOT"
        assert len(snapshot.data["collections"]["flow_nodes"]["documents"]) == 2

    @pytest.mark.parametrize("last_event_id", ["not-one-of-ours", "H", "hAAAA"])
    async def test_an_id_that_is_not_ours_is_a_resync(self, last_event_id):
        """A forged or garbled id gets RESYNC invalid-id (or unknown-position) and a SNAPSHOT, never an error."""
        database = FakeDatabase()
        async with running(database) as service:
            back = await join(service, last_event_id=last_event_id)
            resync, snapshot = await back.until(2)
        assert resync.event == "RESYNC" and resync.data["reason"] in ("invalid-id", "unknown-position")
        assert snapshot.event == "SNAPSHOT"

    async def test_a_reset_in_the_missed_history_is_a_resync(self):
        """A collection dropped while the client was away: the catch-up stops there with RESYNC collection-drop."""
        database = FakeDatabase()
        async with running(database, stream_replay_per_flow="0") as service:
            client = await join(service, snapshot=False)
            database.insert("flow_nodes", node(1))
            await client.until(1)
            client.close()
            database.drop("flow_nodes")
            await settled(service, database)
            back = await join(service, last_event_id=client.last_id, snapshot=False)
            (resync,) = await back.until(1)
        assert (resync.event, resync.data["reason"]) == ("RESYNC", "collection-drop")

    async def test_a_catch_up_that_fails_is_a_resync(self):
        """The oplog cannot be read: RESYNC catch-up-failed, never a hang."""
        database = FakeDatabase()
        async with running(database, stream_replay_per_flow="0") as service:
            client = await join(service, snapshot=False)
            database.insert("flow_nodes", node(1))
            await client.until(1)
            await settled(service, database)
            database.failures.append(HistoryLostError("pruned meanwhile", code=286))
            back = await join(service, last_event_id=client.last_id, snapshot=False)
            (resync,) = await back.until(1)
        assert resync.data["reason"] in ("history-lost", "catch-up-failed")


class TestLive:
    async def test_a_dropped_collection_resyncs_every_client(self):
        """A reset reaches every subscriber, whatever types it asked for, at the live position."""
        database = FakeDatabase()
        async with running(database) as service:
            logs_only = await join(service, types=frozenset({"LOG_STREAM"}), snapshot=False)
            everything = await join(service, snapshot=False)
            database.drop("flow_nodes")
            for client in (logs_only, everything):
                (resync,) = await client.until(1)
                assert (resync.event, resync.data["reason"]) == ("RESYNC", "collection-drop")
                assert resync.id == service.hub.position

    async def test_internal_fields_never_reach_a_client(self):
        """Underscore fields, secrets and credentials are stripped from every frame, updates included."""
        database = FakeDatabase()
        async with running(database) as service:
            client = await join(service, snapshot=False)
            database.insert("flow_nodes", {**node(1), "data": {"credentials": {"key": "sk-1"}}})
            database.update("flow_nodes", "n1", set={"data.credentials.key": "sk-2", "label": "x", "_seen": 1})
            insert, update = await client.until(2)
        for message in (insert, update):
            text = json.dumps(message.data)
            assert "sk-" not in text and "_internal" not in text and "_seen" not in text
        assert update.data["patch"] == [{"op": "replace", "path": "/label", "value": "x"}]


class TestPublishedEvents:
    """Events of back-end services are in the hub's history only: the oplog cannot bring them back."""

    @staticmethod
    async def publish(service: Service, seq: int) -> str:
        published = await service.publisher.publish(FLOW, {"type": "LOG_STREAM", "data": {"seq": seq, "chunk": "w"}})
        return published.id

    async def test_they_are_replayed_from_the_hub(self):
        """A client that comes back gets the published events it missed, in order with the writes."""
        database = FakeDatabase()
        async with running(database, publish_event_types="LOG_STREAM") as service:
            client = await join(service, snapshot=False)
            await self.publish(service, 1)
            await client.until(1)
            client.close()
            await self.publish(service, 2)
            database.insert("flow_logs", log_chunk(3))
            await settled(service, database)
            await self.publish(service, 4)
            back = await join(service, last_event_id=client.last_id)
            missed = await back.until(3)
        assert [message.data["document"]["seq"] for message in missed] == [2, 3, 4]

    async def test_a_client_the_history_cannot_serve_reloads_when_it_may_have_missed_some(self):
        """When the hub no longer holds what followed a client's id and the flow had published events
        since, the client gets RESYNC history-lost (then a SNAPSHOT), not a catch-up with a silent gap."""
        database = FakeDatabase()
        async with running(database, publish_event_types="LOG_STREAM", stream_replay_per_flow="0") as service:
            client = await join(service, snapshot=False)
            database.insert("flow_logs", log_chunk(1))
            await client.until(1)
            client.close()
            await self.publish(service, 2)
            back = await join(service, last_event_id=client.last_id)
            resync, snapshot = await back.until(2)
        assert (resync.event, resync.data["reason"]) == ("RESYNC", "history-lost")
        assert snapshot.event == "SNAPSHOT"

    async def test_without_published_events_since_the_oplog_suffices(self):
        """No published event after the client's id: the catch-up from the oplog is complete."""
        database = FakeDatabase()
        async with running(database, publish_event_types="LOG_STREAM", stream_replay_per_flow="0") as service:
            client = await join(service, snapshot=False)
            await self.publish(service, 1)
            await client.until(1)
            client.close()
            database.insert("flow_logs", log_chunk(2))
            await settled(service, database)
            back = await join(service, last_event_id=client.last_id)
            (caught_up,) = await back.until(1)
        assert caught_up.data["document"]["seq"] == 2

    @pytest.mark.parametrize(("publishing", "first_event"), [("LOG_STREAM", "RESYNC"), ("", "LOG_STREAM")])
    async def test_an_id_of_an_earlier_process(self, publishing, first_event):
        """After a restart (a new epoch) the hub cannot vouch for published events: a client reloads
        when publishing is on; without it, the oplog catches it up."""
        database = FakeDatabase()
        async with running(database, publish_event_types=publishing) as service:
            client = await join(service, snapshot=False)
            database.insert("flow_logs", log_chunk(1))
            await client.until(1)
        database.insert("flow_logs", log_chunk(2))
        async with running(database, publish_event_types=publishing) as restarted:
            back = await join(restarted, last_event_id=client.last_id, snapshot=False)
            first = await back.next()
        assert first.event == first_event


async def published(service: Service, database: FakeDatabase, write: Any) -> None:
    """Run ``write`` and wait until the live stream published it: the hub's clock is then at the
    database's latest change, so a read now is not settled by the clock alone."""
    watcher = await join(service, snapshot=False)
    write()
    await watcher.next()
    watcher.close()


class TestSnapshotBarrier:
    """The snapshot waits until nothing its read holds is still to be published, without waiting
    for the live stream's next empty poll when the server can prove it sooner."""

    async def test_an_idle_database_answers_without_waiting_for_a_poll(self):
        """With polls far longer than the wait allowed here, the snapshot still comes at once: the probe
        finds nothing after the hub's position."""
        database = FakeDatabase()
        async with running(database, stream_max_await_time_ms="60000") as service:
            await published(service, database, lambda: database.insert("flow_nodes", node(1)))
            async with asyncio.timeout(1.0):
                client = await join(service)
            database.insert("flow_nodes", node(2))
            snapshot, live = await client.until(2)
        assert snapshot.event == "SNAPSHOT"
        assert [n["_id"] for n in snapshot.data["collections"]["flow_nodes"]["documents"]] == ["n1"]
        assert (live.event, live.data["documentId"], live.data["operation"]) == ("SYNC_CANVAS", "n2", "insert")

    async def test_a_change_the_read_holds_but_the_stream_has_not_published_is_waited_for(self):
        """A change committed before the read that the live stream has not yet published makes the probe
        answer no: the snapshot waits for it and folds it, and it is not sent again."""
        database = FakeDatabase()
        async with running(database) as service:
            await settled(service, database)
            answers: list[bool] = []
            snapshots = service.joins.snapshots
            probe = snapshots.stream_passed

            async def recorded(position: str, after: tuple[int, int]) -> bool:
                answers.append(await probe(position, after))
                return answers[-1]

            snapshots.stream_passed = recorded  # type: ignore[method-assign]
            database.insert("flow_nodes", node(1))  # no await before the join: the stream has not seen it
            client = await join(service)
            database.insert("flow_logs", log_chunk(1))
            snapshot, marker = await client.until(2)
        assert answers == [False]
        assert [n["_id"] for n in snapshot.data["collections"]["flow_nodes"]["documents"]] == ["n1"]
        assert marker.event == "LOG_STREAM", "the insert folded into the snapshot is not sent again"

    async def test_writes_right_after_the_read_come_once_after_the_snapshot(self):
        """A change committed after the read is later than it: the probe answers yes, and the change
        follows the snapshot, once."""
        database = FakeDatabase()
        async with running(database, stream_max_await_time_ms="60000") as service:
            await published(service, database, lambda: database.insert("flow_nodes", node(1)))
            # After the last of the snapshot's reads (logs: no chunk yet, so one read), so that no read of
            # it sees the update.
            database.after_reads["flow_logs"] = [lambda: database.update("flow_nodes", "n1", set={"label": "moved"})]
            async with asyncio.timeout(1.0):
                client = await join(service)
            database.insert("flow_logs", log_chunk(1))
            messages = await client.until(2)
            while messages[-1].event != "LOG_STREAM":
                messages.append(await client.next())
        snapshot, *rest = messages
        folded = snapshot.data["collections"]["flow_nodes"]["documents"][0]["label"] == "moved"
        updates = [m for m in rest if m.event == "SYNC_CANVAS"]
        assert len(updates) == (0 if folded else 1), "the update is in the snapshot or after it, exactly once"
