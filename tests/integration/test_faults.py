"""Faults between MongoDB and the service: failed getMores, dropped connections, outages, lost history, drops.

The delivery tests write numbered log chunks ``{"flowId", "seq", "chunk"}`` into ``flow_logs``, then a
fence chunk once the fault is over, and check that the client received exactly ``0..fence`` in order:
nothing lost, nothing duplicated. Fail points carry ``appName: "changesync"`` so they hit only the
service's MongoDB client, never the test's own writers, and every test turns them off when it ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.collection import AsyncCollection

import changesync.mongo
from changesync.codec import encode_token
from harness import Event, EventStream, RunningService, metric, run_service, service_settings

APP_NAME = "changesync"  # the appName of the service's MongoDB client (changesync.mongo.open_client)
FLOW = "flow-faults"
# Bound on waiting for a chunk once its fault is over; recovery normally takes well under a second.
DELIVERY_TIMEOUT_S = 15.0
# Bound on the outage test's recovery: the reopen backoff is capped at 30 s with jitter.
RECOVERY_TIMEOUT_S = 40.0
POLL_INTERVAL_S = 0.05

ArmFailPoint = Callable[..., Awaitable[None]]


class CommandLog(monitoring.CommandListener):
    """The commands of the service's MongoDB clients, as PyMongo's command monitoring saw them."""

    def __init__(self) -> None:
        self.failures: list[tuple[str, dict[str, Any]]] = []
        self.durations_s: list[tuple[str, float]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self.durations_s.append((event.command_name, event.duration_micros / 1e6))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.failures.append((event.command_name, dict(event.failure)))

    def failed_codes(self, command_name: str) -> list[int | None]:
        """The error code of every failed ``command_name`` (None for network errors)."""
        return [failure.get("code") for name, failure in self.failures if name == command_name]


@pytest.fixture
def service_commands(monkeypatch: pytest.MonkeyPatch) -> CommandLog:
    """Records the commands of every MongoDB client the service opens, to prove a fail point fired."""
    log = CommandLog()
    client_class = changesync.mongo.AsyncMongoClient

    def monitored_client(*args: Any, **kwargs: Any) -> AsyncMongoClient[dict[str, Any]]:
        return client_class(*args, event_listeners=[log], **kwargs)

    monkeypatch.setattr(changesync.mongo, "AsyncMongoClient", monitored_client)
    return log


@pytest.fixture
async def fail_command(mongo_client: AsyncMongoClient[dict[str, Any]]) -> AsyncIterator[ArmFailPoint]:
    """Yield ``arm(mode, **data)`` for the service's client only; the fail point is off after the test."""

    async def arm(mode: Any, **data: Any) -> None:
        await mongo_client.admin.command(
            "configureFailPoint", "failCommand", mode=mode, data={"appName": APP_NAME, **data}
        )

    try:
        yield arm
    finally:
        await mongo_client.admin.command("configureFailPoint", "failCommand", mode="off")


@pytest.fixture
async def service(mongo_backend, database_name, service_commands) -> AsyncIterator[RunningService]:
    async with run_service(service_settings(mongo_backend.uri, database_name)) as running:
        yield running


# --- helpers -------------------------------------------------------------------------------------


def chunk(seq: int, flow_id: str = FLOW) -> dict[str, Any]:
    return {"flowId": flow_id, "executionId": "run-1", "nodeId": "n0", "seq": seq, "chunk": f"part {seq} "}


async def write_chunks(logs: AsyncCollection[dict[str, Any]], seqs: Iterable[int], *, pause_s: float = 0.0) -> None:
    """Insert one chunk per seq, in order; ``pause_s`` spreads them out so that writes go on during a fault."""
    for seq in seqs:
        await logs.insert_one(chunk(seq))
        if pause_s:
            await asyncio.sleep(pause_s)


async def write_until(
    logs: AsyncCollection[dict[str, Any]], first_seq: int, fired: Callable[[], bool], *, after: int = 5
) -> int:
    """Write chunks from ``first_seq`` on, 20 ms apart, until the fault ``fired`` and ``after`` more were written.

    Returns the next seq. Fails if the fault does not fire within DELIVERY_TIMEOUT_S.
    """
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    seq, written_after = first_seq, 0
    while written_after < after:
        if time.monotonic() > deadline:
            pytest.fail(f"the fail point did not fire within {DELIVERY_TIMEOUT_S:g} s")
        await logs.insert_one(chunk(seq))
        seq += 1
        if fired():
            written_after += 1
        await asyncio.sleep(0.02)
    return seq


@dataclass
class Received:
    seqs: list[int] = field(default_factory=list)
    others: list[Event] = field(default_factory=list)

    @property
    def resyncs(self) -> list[str]:
        return [event.data["reason"] for event in self.others if event.event == "RESYNC"]


async def receive_until(stream: EventStream, last_seq: int, timeout_s: float = DELIVERY_TIMEOUT_S) -> Received:
    """The seqs of LOG_STREAM events (and every other event) until ``last_seq`` arrives or time is up."""
    received = Received()
    deadline = time.monotonic() + timeout_s
    while last_seq not in received.seqs:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            event = await stream.next(remaining)
        except TimeoutError:
            break
        if event.event == "LOG_STREAM":
            received.seqs.append(event.data["document"]["seq"])
        else:
            received.others.append(event)
    return received


async def assert_exactly_once(stream: EventStream, logs: AsyncCollection[dict[str, Any]], fence: int) -> Received:
    """Write the fence chunk, then check the client got every chunk ``0..fence`` once, in order, and no RESYNC."""
    await logs.insert_one(chunk(fence))
    received = await receive_until(stream, fence)
    assert received.seqs == list(range(fence + 1))
    assert received.resyncs == []
    return received


async def assert_next_chunk(stream: EventStream, logs: AsyncCollection[dict[str, Any]], seq: int) -> None:
    """Write chunk ``seq`` and check it is the next event the client receives."""
    await logs.insert_one(chunk(seq))
    received = await receive_until(stream, seq)
    assert (received.seqs, received.others) == ([seq], [])


async def restarts(service: RunningService, kind: str) -> float:
    return await metric(service, "changesync_change_stream_restarts_total", kind=kind)


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str | Callable[[], str], timeout_s: float) -> float:
    """Poll ``condition`` until it holds; return how long that took. Fails after ``timeout_s``."""
    started = time.monotonic()
    while not await condition():
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"{what if isinstance(what, str) else what()} not within {timeout_s:g} s")
        await asyncio.sleep(POLL_INTERVAL_S)
    return time.monotonic() - started


# --- the live stream survives getMore faults -----------------------------------------------------


@pytest.mark.failpoints
async def test_resumable_getmore_error(service, database, fail_command, service_commands):
    """A getMore that fails once with a resumable error is resumed: every chunk arrives once, in order."""
    async with EventStream(service.events_url(FLOW, snapshot="false")) as stream:
        await write_chunks(database.flow_logs, range(5))
        await fail_command(
            {"times": 1}, failCommands=["getMore"], errorCode=234, errorLabels=["ResumableChangeStreamError"]
        )
        fence = await write_until(database.flow_logs, 5, lambda: len(service_commands.failed_codes("getMore")) >= 1)
        await assert_exactly_once(stream, database.flow_logs, fence)
    assert service_commands.failed_codes("getMore") == [234]


@pytest.mark.failpoints
async def test_non_resumable_getmore_error_reopens_from_last_position(
    service, database, fail_command, service_commands
):
    """Two non-resumable getMore errors close the stream; changesync reopens it where it was, losing nothing."""
    async with EventStream(service.events_url(FLOW, snapshot="false")) as stream:
        await write_chunks(database.flow_logs, range(5))
        await fail_command({"times": 2}, failCommands=["getMore"], errorCode=2, errorLabels=[])
        fence = await write_until(database.flow_logs, 5, lambda: len(service_commands.failed_codes("getMore")) >= 2)
        await assert_exactly_once(stream, database.flow_logs, fence)
    assert service_commands.failed_codes("getMore") == [2, 2]
    assert await restarts(service, "server-error") >= 1


@pytest.mark.failpoints
async def test_connection_closed_on_getmore(service, database, fail_command, service_commands):
    """getMore connections dropped twice in a row are network errors the stream resumes from, losing nothing."""
    async with EventStream(service.events_url(FLOW, snapshot="false")) as stream:
        await write_chunks(database.flow_logs, range(5))
        await fail_command({"times": 2}, failCommands=["getMore"], closeConnection=True)
        fence = await write_until(database.flow_logs, 5, lambda: len(service_commands.failed_codes("getMore")) >= 2)
        await assert_exactly_once(stream, database.flow_logs, fence)
    assert service_commands.failed_codes("getMore") == [None, None]


@pytest.mark.failpoints
async def test_blocked_getmore_delays_but_delivers(service, database, fail_command, service_commands):
    """A getMore blocked for 1.5 s only delays the chunks written meanwhile; they all arrive, in order."""

    def blocked() -> bool:
        return any(name == "getMore" and seconds >= 1.4 for name, seconds in service_commands.durations_s)

    async with EventStream(service.events_url(FLOW, snapshot="false")) as stream:
        await write_chunks(database.flow_logs, range(5))
        await fail_command({"times": 1}, failCommands=["getMore"], blockConnection=True, blockTimeMS=1500)
        fence = await write_until(database.flow_logs, 5, blocked)
        await assert_exactly_once(stream, database.flow_logs, fence)


@pytest.mark.failpoints
async def test_live_stream_position_lost(service, database, fail_command, service_commands):
    """When the live stream's own position is lost, connected clients get RESYNC history-lost and live events go on."""
    async with EventStream(service.events_url(FLOW, snapshot="false")) as stream:
        await write_chunks(database.flow_logs, range(5))
        assert (await receive_until(stream, 4)).seqs == list(range(5))
        await fail_command({"times": 1}, failCommands=["getMore"], errorCode=136, errorLabels=[])
        resync = await stream.next()
        assert (resync.event, resync.data["reason"]) == ("RESYNC", "history-lost")
        await assert_next_chunk(stream, database.flow_logs, 5)
    assert service_commands.failed_codes("getMore") == [136]
    assert await restarts(service, "position-lost") == 1


# --- readiness through an outage -----------------------------------------------------------------


@pytest.mark.failpoints
async def test_readiness_follows_a_broken_stream(service, database, fail_command, service_commands):
    """/readyz is 503 while every getMore and aggregate fails, then 200; the outage's chunks arrive once, in order."""
    async with EventStream(service.events_url(FLOW, snapshot="false")) as stream, httpx.AsyncClient() as http:

        async def readyz() -> httpx.Response:
            return await http.get(f"{service.base_url}/readyz")

        assert (await readyz()).status_code == 200
        await write_chunks(database.flow_logs, range(5))
        await fail_command("alwaysOn", failCommands=["getMore", "aggregate"], errorCode=2, errorLabels=[])

        async def not_ready() -> bool:
            return (await readyz()).status_code == 503

        await wait_for(not_ready, "/readyz 503 after the stream broke", 10)
        body = (await readyz()).json()
        assert body["status"] == "not-ready"
        assert not (body["checks"]["changeStreamOpen"] and body["checks"]["polling"])
        await write_chunks(database.flow_logs, range(5, 20), pause_s=0.01)

        async def reopen_failed_repeatedly() -> bool:
            return await restarts(service, "server-error") >= 4

        # A few failed reopens (backoff 0.1, 0.2, 0.4 s ...), so that the outage lasts a moment.
        await wait_for(reopen_failed_repeatedly, "four failed reopens", 10)
        assert (await readyz()).status_code == 503
        assert service_commands.failed_codes("aggregate"), "the reopen attempts must have hit the fail point"
        await fail_command("off")
        recovered_at = time.monotonic()

        async def ready() -> bool:
            return (await readyz()).status_code == 200

        ready_after_s = await wait_for(ready, "/readyz 200 after the outage", RECOVERY_TIMEOUT_S)
        await assert_exactly_once(stream, database.flow_logs, 20)
        delivered_after_s = time.monotonic() - recovered_at
    print(f"outage recovery: /readyz 200 after {ready_after_s:.2f} s, all chunks after {delivered_after_s:.2f} s")
    assert delivered_after_s < RECOVERY_TIMEOUT_S


# --- resuming a client by Last-Event-ID when history cannot help ---------------------------------


async def test_resume_after_history_was_pruned(secantusdb_server, database_name, service_commands):
    """Resuming from a position the oplog no longer holds gives RESYNC history-lost, a SNAPSHOT, then live events."""
    server = secantusdb_server("--oplog-max-entries", "50")
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(server.uri)
    try:
        logs = client[database_name].flow_logs
        settings = service_settings(server.uri, database_name, stream={"replay_per_flow": 0})
        async with run_service(settings) as running:
            async with EventStream(running.events_url(FLOW, snapshot="false")) as first:
                await write_chunks(logs, [0])
                event = await first.next()
                assert (event.event, event.data["document"]["seq"]) == ("LOG_STREAM", 0)
                last_id = first.last_id
            assert last_id
            # SecantusDB prunes the oplog to its last 50 entries once every 1,000 oplog writes.
            busy = [chunk(seq, "flow-busy") for seq in range(1200)]
            for start in range(0, len(busy), 100):
                await logs.insert_many(busy[start : start + 100])

            # The live stream is past the busy writes once a marker written after them reaches a client.
            # (It may not have read every one of them: SecantusDB silently skips what it prunes under an
            # open cursor, where mongod fails the getMore with CappedPositionLost.)
            async with EventStream(running.events_url("flow-marker", snapshot="false")) as marker:
                await logs.insert_one(chunk(0, "flow-marker"))
                assert (await marker.next()).data["flowId"] == "flow-marker"
            live_resets = await restarts(running, "position-lost")
            async with EventStream(
                running.events_url(FLOW, snapshot="true"), headers={"Last-Event-ID": last_id}
            ) as again:
                assert again.status_code == 200
                resync = await again.next()
                assert (resync.event, resync.data["reason"]) == ("RESYNC", "history-lost")
                assert (await again.next()).event == "SNAPSHOT"
                await write_chunks(logs, [1])
                live = await again.next()
                assert (live.event, live.data["document"]["seq"]) == ("LOG_STREAM", 1)
            # The RESYNC came from the client's catch-up, not from a reset of the live stream.
            assert await restarts(running, "position-lost") == live_resets
    finally:
        await client.close()
    assert 286 in service_commands.failed_codes("aggregate")


@pytest.mark.failpoints
@pytest.mark.parametrize(("code", "reason"), [(286, "history-lost"), (280, "unknown-position"), (2, "catch-up-failed")])
async def test_catch_up_aggregate_fails(
    mongo_backend, database_name, database, fail_command, service_commands, code, reason
):
    """A failed catch-up aggregate gives the resuming client a RESYNC naming why, a SNAPSHOT, then live events."""
    settings = service_settings(mongo_backend.uri, database_name, stream={"replay_per_flow": 0})
    async with run_service(settings) as running:
        async with EventStream(running.events_url(FLOW, snapshot="false")) as first:
            await write_chunks(database.flow_logs, [0])
            assert (await first.next()).data["document"]["seq"] == 0
            last_id = first.last_id
        assert last_id
        await write_chunks(database.flow_logs, [1])
        # Without a fault the same id catches up from history (the replay buffer is off).
        async with EventStream(
            running.events_url(FLOW, snapshot="false"), headers={"Last-Event-ID": last_id}
        ) as control:
            caught_up = await control.next()
            assert (caught_up.event, caught_up.data["document"]["seq"]) == ("LOG_STREAM", 1)
        await fail_command({"times": 1}, failCommands=["aggregate"], errorCode=code)
        async with EventStream(running.events_url(FLOW), headers={"Last-Event-ID": last_id}) as again:
            assert again.status_code == 200
            resync = await again.next()
            assert (resync.event, resync.data["reason"]) == ("RESYNC", reason)
            assert (await again.next()).event == "SNAPSHOT"
            await write_chunks(database.flow_logs, [2])
            live = await again.next()
            assert (live.event, live.data["document"]["seq"]) == ("LOG_STREAM", 2)
        # Only the catch-up met the fail point: the live stream never reopened.
        assert service_commands.failed_codes("aggregate") == [code]
        for kind in ("server-error", "position-lost", "connection", "driver-error", "internal-error"):
            assert await restarts(running, kind) == 0, kind


async def resync_reasons(
    running: RunningService, logs: AsyncCollection[dict[str, Any]], ids: list[str]
) -> dict[str, tuple[int | None, str]]:
    """For each Last-Event-ID: the HTTP status and the first event's reason; checks live events follow."""
    outcomes: dict[str, tuple[int | None, str]] = {}
    for seq, last_id in enumerate(ids):
        async with EventStream(
            running.events_url(FLOW, snapshot="false"), headers={"Last-Event-ID": last_id}
        ) as stream:
            first = await stream.next()
            outcomes[last_id] = (
                stream.status_code,
                first.data.get("reason") if first.event == "RESYNC" else first.event,
            )
            # Whatever the id, the client stays connected and receives what follows.
            await write_chunks(logs, [seq])
            received = await receive_until(stream, seq)
            assert received.seqs == [seq], last_id
    return outcomes


async def test_undecodable_last_event_id(service, database):
    """An id changesync cannot decode gets status 200 and RESYNC invalid-id, and live events follow."""
    ids = ["not an id", "H", "zzzz", "bAAAA", "b" + "A" * 40]
    outcomes = await resync_reasons(service, database.flow_logs, ids)
    assert outcomes == {last_id: (200, "invalid-id") for last_id in ids}


async def test_last_event_id_for_a_position_that_never_existed(service, database, service_commands):
    """An id that decodes but names no position of this deployment gets 200 and a RESYNC saying the id is unusable."""
    ids = [
        encode_token({"_data": "82" + "00" * 20}),  # a zero cluster time
        "Hxyz0123",  # tampered: decodes to {"_data": "C72CF4D76D"}, which no server issued
    ]
    outcomes = await resync_reasons(service, database.flow_logs, ids)
    # Reported server errors, for the record (SecantusDB: 9 FailedToParse for both).
    print("catch-up aggregate errors:", service_commands.failed_codes("aggregate"))
    unusable = {"invalid-id", "unknown-position", "history-lost"}
    assert all(status == 200 and reason in unusable for status, reason in outcomes.values()), outcomes


# --- drops ---------------------------------------------------------------------------------------


async def test_dropping_the_collection_and_the_database(service, database):
    """Dropping flow_logs, then the database, sends RESYNCs; chunks written before and after arrive once, in order."""
    logs = database.flow_logs
    async with EventStream(service.events_url(FLOW, snapshot="false")) as stream:
        await write_chunks(logs, range(5))
        before = await receive_until(stream, 4)
        assert before.seqs == list(range(5)) and before.others == []

        await logs.drop()
        await write_chunks(logs, range(5, 10))
        after_drop = await receive_until(stream, 9)
        assert after_drop.seqs == list(range(5, 10))
        assert after_drop.resyncs == ["collection-drop"]
        assert [event.event for event in after_drop.others] == ["RESYNC"]

        await database.client.drop_database(database.name)
        await write_chunks(logs, range(10, 15))
        after_drop_database = await receive_until(stream, 14)
        assert after_drop_database.seqs == list(range(10, 15))
        reasons = after_drop_database.resyncs
        assert reasons, "dropping the database must tell the client to resync"
        assert {"collection-drop", "database-dropped"} & set(reasons), reasons
        assert set(reasons) <= {"collection-drop", "database-dropped", "invalidated"}, reasons
        print("RESYNC reasons after dropDatabase:", reasons)
        # The stream was invalidated and reopened after the invalidate: the service still delivers.
        await assert_next_chunk(stream, logs, 15)
