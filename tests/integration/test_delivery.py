"""Delivery guarantees over real HTTP: resume, snapshots, moves, slow consumers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import socket
import tracemalloc

import httpx
import jsonpatch
import pymongo.errors
import pytest
from bson import ObjectId

from changesync.codec import encode_token
from harness import EventStream, metric, run_service, service_settings

flow_numbers = itertools.count()


def new_flow() -> str:
    return f"flow-{next(flow_numbers)}"


async def log_chunks(database, flow_id: str, seqs) -> None:
    for seq in seqs:
        await database.flow_logs.insert_one({"flowId": flow_id, "seq": seq, "chunk": f"c{seq}"})


async def seqs_until(stream: EventStream, last: int) -> list[int]:
    """The seq of every LOG_STREAM event until ``last`` arrives (other events are skipped)."""
    seqs: list[int] = []
    while not seqs or seqs[-1] != last:
        event = await stream.next()
        if event.event == "LOG_STREAM":
            seqs.append(event.data["document"]["seq"])
    return seqs


@pytest.fixture
def settings(mongo_backend, database_name):
    return service_settings(mongo_backend.uri, database_name, stream={"heartbeat_interval_s": 0.3})


@pytest.fixture
async def service(settings):
    async with run_service(settings) as running:
        yield running


class TestResume:
    async def test_from_the_replay_buffer(self, service, database):
        """A client that reconnects with its last id gets exactly what it missed, then live events."""
        flow = new_flow()
        async with EventStream(service.events_url(flow, snapshot="false")) as first:
            await log_chunks(database, flow, range(3))
            assert await seqs_until(first, 2) == [0, 1, 2]
            last_id = first.last_id
        await log_chunks(database, flow, range(3, 6))
        async with EventStream(service.events_url(flow), headers={"Last-Event-ID": last_id}) as second:
            await log_chunks(database, flow, [6])
            assert await seqs_until(second, 6) == [3, 4, 5, 6]

    async def test_from_history_after_a_restart(self, settings, database):
        """After the service restarts (empty buffers), a reconnect catches up from MongoDB's history."""
        flow = new_flow()
        async with run_service(settings) as service, EventStream(service.events_url(flow, snapshot="false")) as first:
            await log_chunks(database, flow, range(2))
            await seqs_until(first, 1)
            last_id = first.last_id
        await log_chunks(database, flow, range(2, 5))
        async with run_service(settings) as service:
            url = service.events_url(flow, lastEventId=last_id)
            async with EventStream(url) as second:
                await log_chunks(database, flow, [5])
                assert await seqs_until(second, 5) == [2, 3, 4, 5]
                assert second.raw and not any('"RESYNC"' in data for data in second.raw)

    async def test_catch_up_splices_into_concurrent_writes(self, mongo_backend, database_name, database):
        """Catching up from history while writes continue delivers every write exactly once, in order."""
        settings = service_settings(mongo_backend.uri, database_name, stream={"replay_per_flow": 0})
        flow = new_flow()
        async with run_service(settings) as service:
            async with EventStream(service.events_url(flow, snapshot="false")) as first:
                await log_chunks(database, flow, [0])
                await seqs_until(first, 0)
                last_id = first.last_id
            writer = asyncio.create_task(log_chunks(database, flow, range(1, 300)))
            await log_chunks(database, "elsewhere", range(20))
            async with EventStream(service.events_url(flow), headers={"Last-Event-ID": last_id}) as second:
                await writer
                assert await seqs_until(second, 299) == list(range(1, 300))

    async def test_heartbeats_carry_a_resumable_position(self, service, database):
        """An idle client's last id moves with heartbeats, and resuming from it misses nothing."""
        flow = new_flow()
        async with EventStream(service.events_url(flow, snapshot="false")) as idle:
            await log_chunks(database, "another-flow", range(3))
            async with asyncio.timeout(5):
                while idle.last_id is None:  # noqa: ASYNC110 - the reader task sets it
                    await asyncio.sleep(0.05)
            heartbeat_id = idle.last_id
        await log_chunks(database, flow, range(2))
        async with EventStream(service.events_url(flow), headers={"Last-Event-ID": heartbeat_id}) as resumed:
            assert await seqs_until(resumed, 1) == [0, 1]

    async def test_invalid_id_gets_resync_then_snapshot(self, service, database):
        """A garbled Last-Event-ID is answered with RESYNC (not an error page), then a snapshot and live
        events; the RESYNC is counted by its reason."""
        flow = new_flow()
        before = await metric(service, "changesync_resyncs_total", reason="invalid-id")
        async with EventStream(service.events_url(flow), headers={"Last-Event-ID": "not-an-id"}) as stream:
            assert stream.status_code == 200
            resync = await stream.next()
            assert (resync.event, resync.data["reason"], resync.data["resumable"]) == ("RESYNC", "invalid-id", False)
            assert (await stream.next()).event == "SNAPSHOT"
            await log_chunks(database, flow, [0])
            assert await seqs_until(stream, 0) == [0]
        assert await metric(service, "changesync_resyncs_total", reason="invalid-id") == before + 1

    async def test_foreign_position_gets_resync(self, service):
        """A well-formed id for a position this deployment never had is a RESYNC, never a silent gap."""
        foreign = encode_token({"_data": "8200000001000000012B0229296E04"})
        url = service.events_url(new_flow(), snapshot="false")
        async with EventStream(url, headers={"Last-Event-ID": foreign}) as stream:
            event = await stream.next()
            assert event.event == "RESYNC"
            assert event.data["reason"] in ("unknown-position", "history-lost", "invalid-id")


class TestSnapshot:
    async def test_live_from_the_first_byte(self, service, database):
        """A write made right after the stream opened is never missed, with or without a snapshot
        (with one, the chunk is in the snapshot's log text or follows it, once)."""
        for snapshot in ("false", "true"):
            flow = new_flow()
            async with EventStream(service.events_url(flow, snapshot=snapshot)) as stream:
                await log_chunks(database, flow, [0])
                if snapshot == "true":
                    first = await stream.next()
                    assert first.event == "SNAPSHOT"
                    texts = [node["text"] for node in first.data["logs"]["flow_logs"]["nodes"]]
                    if texts == ["c0"]:
                        await log_chunks(database, flow, [1])
                        assert await seqs_until(stream, 1) == [1]
                        continue
                    assert texts == []
                assert await seqs_until(stream, 0) == [0]

    async def test_snapshot_is_consistent_with_concurrent_writers(self, service, database):
        """SNAPSHOT plus the events after it equals the stored state: nothing lost or applied twice."""
        flow = new_flow()
        await database.flowboards.insert_one({"_id": flow, "counter": 0, "items": [], "secrets": {"k": "v"}})
        stop = asyncio.Event()

        async def write() -> None:
            for count in itertools.count(1):
                if stop.is_set():
                    return
                await database.flowboards.update_one({"_id": flow}, {"$inc": {"counter": 1}, "$push": {"items": count}})
                await database.flow_nodes.insert_one({"flowId": flow, "n": count})
                if count % 3 == 0:
                    await database.flow_nodes.delete_one({"flowId": flow, "n": count - 1})

        writers = [asyncio.create_task(write()) for _ in range(2)]
        try:
            await asyncio.sleep(0.2)
            async with EventStream(service.events_url(flow)) as stream:
                snapshot = await stream.next()
                assert snapshot.event == "SNAPSHOT"
                collections = snapshot.data["collections"]
                (board,) = collections["flowboards"]["documents"]
                nodes = {node["_id"]: node for node in collections["flow_nodes"]["documents"]}
                assert "flow_logs" not in collections
                await asyncio.sleep(0.3)
                stop.set()
                await asyncio.gather(*writers)
                await database.flow_logs.insert_one({"flowId": flow, "seq": 0, "chunk": "end"})
                while True:
                    event = await stream.next()
                    data = event.data
                    if event.event == "LOG_STREAM":
                        break
                    if data["collection"] == "flowboards":
                        board = jsonpatch.apply_patch(board, data["patch"])
                        assert board == data["document"]
                    elif data["operation"] == "delete":
                        del nodes[data["documentId"]]
                    else:
                        assert data["documentId"] not in nodes, "an insert folded into the snapshot came again"
                        nodes[data["documentId"]] = data["document"]
        finally:
            stop.set()
            await asyncio.gather(*writers, return_exceptions=True)
        stored = await database.flowboards.find_one({"_id": flow})
        assert board == {key: value for key, value in stored.items() if key != "secrets"}
        stored_nodes = {str(node["_id"]) async for node in database.flow_nodes.find({"flowId": flow})}
        assert set(nodes) == stored_nodes

    async def test_an_idle_database_does_not_wait_for_the_stream_to_poll(self, mongo_backend, database_name, database):
        """With empty polls of 3 s, a fresh connection on an idle database still gets its SNAPSHOT within a
        fraction of a poll (before, it waited for two of them), and the next write once after it."""
        settings = service_settings(mongo_backend.uri, database_name, stream={"max_await_time_ms": 3000})
        flow = new_flow()
        async with run_service(settings) as service:
            async with EventStream(service.events_url(flow, snapshot="false")) as watching:
                await database.flow_nodes.insert_one({"_id": f"{flow}-a", "flowId": flow})
                assert (await watching.next()).data["documentId"] == f"{flow}-a"
            for attempt in range(3):
                started = asyncio.get_running_loop().time()
                async with EventStream(service.events_url(flow)) as stream:
                    snapshot = await stream.next(timeout_s=2.0)
                    elapsed_s = asyncio.get_running_loop().time() - started
                    assert snapshot.event == "SNAPSHOT"
                    assert elapsed_s < 1.0, f"the snapshot took {elapsed_s:.2f} s"
                    documents = snapshot.data["collections"]["flow_nodes"]["documents"]
                    assert [d["_id"] for d in documents] == [f"{flow}-a", *(f"{flow}-{i}" for i in range(attempt))]
                    await database.flow_nodes.insert_one({"_id": f"{flow}-{attempt}", "flowId": flow})
                    await log_chunks(database, flow, [attempt])
                    events = [await stream.next(timeout_s=5.0), await stream.next(timeout_s=5.0)]
                    assert [(e.event, e.data["documentId"] if e.event != "LOG_STREAM" else None) for e in events] == [
                        ("SYNC_CANVAS", f"{flow}-{attempt}"),
                        ("LOG_STREAM", None),
                    ]

    async def test_snapshots_under_writes_with_long_polls_miss_nothing_and_repeat_nothing(
        self, mongo_backend, database_name, database
    ):
        """Connections made while writers insert and delete, with polls long enough that the snapshot
        settles through the server's answer, not the live stream: snapshot plus events equals the store."""
        settings = service_settings(mongo_backend.uri, database_name, stream={"max_await_time_ms": 3000})
        flow = new_flow()
        stop = asyncio.Event()

        async def write() -> None:
            for count in itertools.count(1):
                if stop.is_set():
                    return
                await database.flow_nodes.insert_one({"flowId": flow, "n": count})
                if count % 3 == 0:
                    await database.flow_nodes.delete_one({"flowId": flow, "n": count - 1})
                await asyncio.sleep(0.005)

        async with run_service(settings) as service:
            for _ in range(3):
                stop.clear()
                writer = asyncio.create_task(write())
                try:
                    await asyncio.sleep(0.1)
                    async with EventStream(service.events_url(flow)) as stream:
                        snapshot = await stream.next()
                        assert snapshot.event == "SNAPSHOT"
                        nodes = {n["_id"] for n in snapshot.data["collections"]["flow_nodes"]["documents"]}
                        await asyncio.sleep(0.2)
                        stop.set()
                        await writer
                        await log_chunks(database, flow, [0])
                        while (event := await stream.next()).event != "LOG_STREAM":
                            document_id = event.data["documentId"]
                            if event.data["operation"] == "delete":
                                nodes.remove(document_id)
                            else:
                                assert document_id not in nodes, "an insert folded into the snapshot came again"
                                nodes.add(document_id)
                finally:
                    stop.set()
                    await asyncio.gather(writer, return_exceptions=True)
                stored = {str(node["_id"]) async for node in database.flow_nodes.find({"flowId": flow})}
                assert nodes == stored

    async def test_snapshot_filters_like_events(self, service, database):
        """The snapshot applies the same rules: private documents and denied fields are not in it."""
        flow = new_flow()
        await database.flowboards.insert_one({"_id": flow, "name": "x", "_rev": 1, "secrets": 1})
        await database.flow_nodes.insert_many(
            [{"flowId": flow, "n": 1, "data": {"credentials": "c"}}, {"flowId": flow, "n": 2, "visibility": "private"}]
        )
        await database.flow_executions.insert_many([{"flowId": flow, "run": 1}, {"flowId": flow, "run": 2}])
        async with EventStream(service.events_url(flow, types="SYNC_CANVAS,EXECUTION_UPDATE")) as stream:
            snapshot = (await stream.next()).data
        collections = snapshot["collections"]
        assert collections["flowboards"]["documents"] == [{"_id": flow, "name": "x"}]
        assert [node["n"] for node in collections["flow_nodes"]["documents"]] == [1]
        assert collections["flow_nodes"]["documents"][0]["data"] == {}
        assert [run["run"] for run in collections["flow_executions"]["documents"]] == [2]


class TestJoiningARunningExecution:
    async def test_the_text_so_far_then_every_later_chunk_once(self, service, database):
        """A client that connects while chunks stream in gets each node's text so far in its SNAPSHOT,
        then exactly the chunks after it: the text plus the live chunks is what was written."""
        flow = new_flow()
        await database.flow_logs.insert_one({"flowId": flow, "executionId": ObjectId(), "nodeId": "n0", "chunk": "old"})
        execution = ObjectId()
        written: dict[str, list[str]] = {"n0": [], "n1": []}
        stop = asyncio.Event()
        seqs = itertools.count()

        async def write() -> None:
            while not stop.is_set():
                seq = next(seqs)
                node, chunk = f"n{seq % 2}", f"w{seq} "
                await database.flow_logs.insert_one(
                    {"flowId": flow, "executionId": execution, "nodeId": node, "seq": seq, "chunk": chunk}
                )
                written[node].append(chunk)
                await asyncio.sleep(0.002)

        for _ in range(3):
            stop.clear()
            writer = asyncio.create_task(write())
            try:
                await asyncio.sleep(0.1)
                async with EventStream(service.events_url(flow)) as stream:
                    snapshot = await stream.next()
                    assert snapshot.event == "SNAPSHOT"
                    log = snapshot.data["logs"]["flow_logs"]
                    assert log["executionId"] == str(execution), "the execution of the newest chunk"
                    texts = {node["nodeId"]: node["text"] for node in log["nodes"]}
                    assert not any(node["truncated"] for node in log["nodes"])
                    await asyncio.sleep(0.1)
                    stop.set()
                    await writer
                    end = {"flowId": flow, "executionId": execution, "nodeId": "end", "chunk": "end"}
                    await database.flow_logs.insert_one(end)
                    while True:
                        event = await stream.next()
                        if event.event != "LOG_STREAM":
                            continue
                        document = event.data["document"]
                        texts[document["nodeId"]] = texts.get(document["nodeId"], "") + document["chunk"]
                        if document["nodeId"] == "end":
                            break
            finally:
                stop.set()
                await asyncio.gather(writer, return_exceptions=True)
            written.setdefault("end", []).append("end")
            assert texts == {node: "".join(chunks) for node, chunks in written.items()}

    async def test_an_execution_id_that_looks_like_an_operator_is_compared_as_data(self, service, database):
        """An execution id stored as ``{"$ne": "x"}`` names that execution only; it is not a query."""
        flow = new_flow()
        await database.flow_logs.insert_one({"flowId": flow, "executionId": "older", "nodeId": "n0", "chunk": "no"})
        try:
            await database.flow_logs.insert_one(
                {"flowId": flow, "executionId": {"$ne": "x"}, "nodeId": "n0", "chunk": "yes"}
            )
        except pymongo.errors.PyMongoError as exc:
            pytest.skip(f"this server refuses $-names in a document: {exc}")
        async with EventStream(service.events_url(flow)) as stream:
            snapshot = await stream.next()
        log = snapshot.data["logs"]["flow_logs"]
        assert log["executionId"] == {"$ne": "x"}
        assert [node["text"] for node in log["nodes"]] == ["yes"]

    async def test_a_long_output_keeps_its_tail(self, mongo_backend, database_name, database):
        """Beyond ``log_tail_bytes`` a node's text is its tail, flagged; the routes set it per collection."""
        settings = service_settings(mongo_backend.uri, database_name)
        options = dict(settings.route_options)
        options["flow_logs"] = dataclasses.replace(options["flow_logs"], log_tail_bytes=10)
        flow = new_flow()
        await database.flow_logs.insert_many(
            [{"flowId": flow, "executionId": "e1", "nodeId": "n0", "chunk": f"{seq:03} "} for seq in range(10)]
        )
        async with (
            run_service(dataclasses.replace(settings, route_options=options)) as service,
            EventStream(service.events_url(flow)) as stream,
        ):
            snapshot = await stream.next()
        (node,) = snapshot.data["logs"]["flow_logs"]["nodes"]
        assert node == {"nodeId": "n0", "text": "7 008 009 ", "chunks": 3, "truncated": True}


class TestMoves:
    async def test_flow_change_is_delete_here_and_insert_there(self, service, database):
        """A node moved to another flow leaves the old flow as a delete and enters the new one as an insert."""
        old, new = new_flow(), new_flow()
        node = await database.flow_nodes.insert_one({"flowId": old, "label": "n"})
        async with (
            EventStream(service.events_url(old, snapshot="false")) as old_stream,
            EventStream(service.events_url(new, snapshot="false")) as new_stream,
        ):
            await database.flow_nodes.update_one({"_id": node.inserted_id}, {"$set": {"flowId": new}})
            gone, came = await old_stream.next(), await new_stream.next()
        assert (gone.data["operation"], gone.data["document"], gone.data["documentId"]) == (
            "delete",
            None,
            str(node.inserted_id),
        )
        assert (came.data["operation"], came.data["document"]["flowId"]) == ("insert", new)

    async def test_private_toggle_never_leaks_the_private_state(self, service, database):
        """Turning a document private is a delete without its content; making it public again is an insert."""
        flow = new_flow()
        node = await database.flow_nodes.insert_one({"flowId": flow, "label": "public"})
        async with EventStream(service.events_url(flow, snapshot="false")) as stream:
            await database.flow_nodes.update_one(
                {"_id": node.inserted_id}, {"$set": {"visibility": "private", "label": "secret plan"}}
            )
            await database.flow_nodes.update_one({"_id": node.inserted_id}, {"$set": {"label": "still secret"}})
            await database.flow_nodes.update_one({"_id": node.inserted_id}, {"$set": {"visibility": "team"}})
            gone, back = await stream.next(), await stream.next()
        assert (gone.data["operation"], gone.data["document"]) == ("delete", None)
        assert back.data["operation"] == "insert" and back.data["document"]["label"] == "still secret"
        assert not any("secret plan" in data for data in stream.raw)


class TestSlowConsumers:
    async def test_stalled_client_is_cut_off_memory_stays_flat_and_others_are_unaffected(
        self, mongo_backend, database_name, database
    ):
        """A client that stops reading is cut off, memory stays flat, and a reading client gets everything."""
        settings = service_settings(
            mongo_backend.uri,
            database_name,
            stream={"client_queue_size": 50, "send_timeout_s": 1.0, "replay_max_bytes": 1_000_000},
        )
        flow = new_flow()
        chunk = "x" * 10_000
        seqs: list[int] = []

        async def write_and_read(reader: EventStream, count: int) -> None:
            """Write ``count`` events while the reading client reads them (as a browser does)."""
            start = len(seqs)

            async def read() -> None:
                while len(seqs) < start + count:
                    seqs.append((await reader.next()).data["document"]["seq"])
                    reader.raw.clear()

            reading = asyncio.create_task(read())
            try:
                for offset in range(0, count, 10):
                    await database.flow_executions.insert_many(
                        [{"flowId": flow, "seq": start + offset + i, "output": chunk} for i in range(10)]
                    )
                await reading
            finally:
                reading.cancel()

        async with run_service(settings) as service:
            stalled = socket.create_connection(("127.0.0.1", settings.port))
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stalled.sendall(f"GET /flows/{flow}/events?snapshot=false HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            with contextlib.closing(stalled):
                async with EventStream(service.events_url(flow, snapshot="false")) as reader:
                    tracemalloc.start()
                    try:
                        await write_and_read(reader, 400)  # 4 MB: fills every buffer on the way
                        after_warm_up = tracemalloc.get_traced_memory()[0]
                        await write_and_read(reader, 1200)  # 12 MB more
                        after_more = tracemalloc.get_traced_memory()[0]
                    finally:
                        tracemalloc.stop()
                assert seqs == list(range(1600))
                grown = after_more - after_warm_up
                assert grown < 1_500_000, f"memory grew by {grown} bytes while 12 MB more went out"
                print(f"traced memory after 4 MB: {after_warm_up} B; after 12 MB more: {after_more} B")
            async with httpx.AsyncClient() as client:
                metrics = (await client.get(f"{service.base_url}/metrics")).text
            assert "changesync_clients_disconnected_slow_total 1.0" in metrics

    async def test_slow_client_resumes_without_a_gap(self, mongo_backend, database_name, database):
        """The client cut off for falling behind gets RESYNC slow-consumer and resumes from its last id."""
        settings = service_settings(mongo_backend.uri, database_name, stream={"client_queue_size": 5})
        flow = new_flow()
        async with run_service(settings) as service:
            stream = EventStream(service.events_url(flow, snapshot="false"))
            async with stream:
                await log_chunks(database, flow, [0])
                await seqs_until(stream, 0)
                # Stop reading (the test does not await the stream) while a burst arrives.
                await database.flow_executions.insert_many([{"flowId": flow, "run": i} for i in range(40)])
                events = await stream.until_end()
            # The burst arrives in one batch, faster than any socket: the 5-event queue overflows.
            assert [event.data["reason"] for event in events if event.event == "RESYNC"] == ["slow-consumer"]
            assert events[-1].event == "RESYNC" and events[-1].data["resumable"]
            async with EventStream(service.events_url(flow), headers={"Last-Event-ID": stream.last_id}) as resumed:
                await log_chunks(database, flow, [1])
                received = [event for event in events if event.event == "EXECUTION_UPDATE"]
                while True:
                    event = await resumed.next()
                    if event.event == "LOG_STREAM":
                        break
                    received.append(event)
            assert [event.data["document"]["run"] for event in received] == list(range(40))
