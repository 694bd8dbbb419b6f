"""Hub mode on a real Valkey (or Redis) and a real MongoDB-compatible server: several processes, one watcher.

Services run in this process (uvicorn on loopback, each its own app) or as separate processes
(``harness.ServiceProcess``) where one must be killed. Every client's sequence is checked: nothing
lost, nothing twice, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Callable

import httpx
import orjson
import pytest
import redis.asyncio as redis

from changesync.hub.keys import INGEST_GROUP, Keys
from harness import (
    EventStream,
    RunningService,
    ServiceProcess,
    metric,
    run_service,
    service_processes,
    service_settings,
)
from tabs import END, LogWriter, Tab, change_stream_cursors, until

# Pace of the background writers (a pause between writes, never used to wait for an outcome).
WRITE_INTERVAL_S = 0.005

FLOW = "flow-hub"
# How long a test waits for one event; the hub path adds milliseconds.
EVENT_TIMEOUT_S = 10.0


def hub_settings(mongo_backend, database_name, redis_url, **overrides):
    hub = {"url": redis_url, "lease_ttl_s": 1.0, **overrides.pop("hub", {})}
    return service_settings(mongo_backend.uri, database_name, hub=hub, **overrides)


async def readiness(service) -> dict:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{service.base_url}/readyz")).json()


async def until_ready(service, timeout_s: float = 10.0) -> dict:
    async with asyncio.timeout(timeout_s):
        while (body := await readiness(service))["status"] != "ready":  # noqa: ASYNC110 - polling an endpoint
            await asyncio.sleep(0.05)
    return body


async def seqs_until(stream: EventStream, last: int) -> list[int]:
    """The seq of every LOG_STREAM event until ``last`` arrives."""
    seen: list[int] = []
    while not seen or seen[-1] != last:
        event = await stream.next(EVENT_TIMEOUT_S)
        if event.event == "LOG_STREAM":
            seen.append(event.data["document"]["seq"])
    return seen


async def test_two_processes_one_watcher_clients_on_both(mongo_backend, database_name, database, redis_server):
    """Two services with one hub: one of them watches, both serve; writes reach the clients of both,
    in order, once, and MongoDB holds one change stream for the deployment."""
    settings_a = hub_settings(mongo_backend, database_name, redis_server.url)
    settings_b = hub_settings(mongo_backend, database_name, redis_server.url)
    async with run_service(settings_a) as a, run_service(settings_b) as b:
        roles = sorted([(await until_ready(a))["role"], (await until_ready(b))["role"]])
        assert roles == ["edge", "watcher"]
        async with (
            EventStream(a.events_url(FLOW, snapshot="false")) as on_a,
            EventStream(b.events_url(FLOW, snapshot="false")) as on_b,
        ):
            for seq in range(20):
                await database.flow_logs.insert_one({"flowId": FLOW, "seq": seq, "chunk": "w"})
            assert await seqs_until(on_a, 19) == list(range(20))
            assert await seqs_until(on_b, 19) == list(range(20))
            cursors = await change_stream_cursors(database)
    if cursors is None:
        print("this backend does not list open cursors in currentOp: the stream count is not checked")
    else:
        assert cursors == 1, f"{cursors} change streams for one deployment"


async def test_a_chunk_published_to_one_process_reaches_the_clients_of_another(
    mongo_backend, database_name, database, redis_server
):
    """POSTed to A, a LOG_STREAM chunk reaches a client of B, filtered, with its id; a client that moves
    to A with that id resumes from the hub's history."""
    publishing = {"event_types": ("LOG_STREAM",)}
    settings_a = hub_settings(mongo_backend, database_name, redis_server.url, publish=publishing)
    settings_b = hub_settings(mongo_backend, database_name, redis_server.url, publish=publishing)
    async with run_service(settings_a) as a, run_service(settings_b) as b, httpx.AsyncClient() as http:
        await until_ready(a)
        await until_ready(b)
        async with EventStream(b.events_url(FLOW, snapshot="false")) as on_b:
            body = {"type": "LOG_STREAM", "data": {"seq": 1, "chunk": "hello ", "_internal": "never sent"}}
            posted = await http.post(f"{a.base_url}/flows/{FLOW}/events", json=body)
            assert posted.status_code == 202, posted.text
            received = await on_b.next(EVENT_TIMEOUT_S)
            await http.post(f"{a.base_url}/flows/{FLOW}/events", json={"type": "LOG_STREAM", "data": {"seq": 2}})
            await database.flow_logs.insert_one({"flowId": FLOW, "seq": 3})
            assert [(await on_b.next(EVENT_TIMEOUT_S)).data["document"]["seq"] for _ in range(2)] == [2, 3]
        assert received.id == posted.json()["id"]
        assert received.data["document"]["chunk"] == "hello " and "_internal" not in received.data["document"]
        async with EventStream(a.events_url(FLOW), headers={"Last-Event-ID": received.id}) as moved:
            assert [(await moved.next(EVENT_TIMEOUT_S)).data["document"]["seq"] for _ in range(2)] == [2, 3]


# --- faults, with real processes ---------------------------------------------------------------------

HUB_ENVIRON = {
    "CHANGESYNC_STREAM_MAX_AWAIT_TIME_MS": "200",
    "CHANGESYNC_HUB_LEASE_TTL_S": "1",
}


@pytest.fixture
async def hub_processes(mongo_backend, database_name):
    """Yield ``create(redis_url, port=None, environ=None) -> ServiceProcess``, started and ready; all are
    killed after."""
    async with service_processes(mongo_backend.uri, database_name, HUB_ENVIRON) as start:

        async def create(redis_url: str, port: int | None = None, environ: dict[str, str] | None = None):
            return await start(port, {"CHANGESYNC_HUB_URL": redis_url, **(environ or {})})

        yield create


async def role(process: ServiceProcess) -> str | None:
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            return (await http.get(f"{process.base_url}/readyz")).json().get("role")
    except httpx.TransportError:
        return None


async def the_watcher(processes: list[ServiceProcess], timeout_s: float = 10.0) -> ServiceProcess:
    """The one process that holds the lease, once exactly one does."""
    async with asyncio.timeout(timeout_s):
        while True:
            roles = [await role(process) for process in processes]
            if roles.count("watcher") == 1:
                return processes[roles.index("watcher")]
            await asyncio.sleep(0.05)


def assert_complete(tab: Tab, writer: LogWriter) -> None:
    lost = [resync for resync in tab.resyncs if not resync["resumable"]]
    assert lost == [], f"{tab.name} had to reload: {lost}"
    assert tab.foreign == [], f"{tab.name} received another flow's events"
    assert tab.seqs == list(range(writer.counts[tab.flow_id])), f"{tab.name}: gap, duplicate or disorder"
    assert len(tab.ids) == len(set(tab.ids)), f"{tab.name} received an id twice"


@pytest.mark.timeout(90)  # two takeovers and a restart, with continuous writes and four clients
async def test_the_watcher_killed_then_the_other_loses_nothing(hub_processes, database, redis_server):
    """kill -9 of the watcher, whichever holds the lease: the other takes over within seconds; then the
    same for the new watcher. Every client, on either process, gets every chunk once, in order."""
    a, b = await hub_processes(redis_server.url), await hub_processes(redis_server.url)
    alive = {"a": a, "b": b}

    def url_for(name: str) -> Callable[[], str]:
        other = "b" if name == "a" else "a"
        return lambda: (alive[name] or alive[other]).events_url(FLOW, snapshot="false")  # type: ignore[union-attr]

    tabs = [Tab(f"tab-{name}-{index}", FLOW, url_for(name)) for name in ("a", "b") for index in range(2)]
    writer = LogWriter(database, [FLOW])
    writing = asyncio.Event()
    takeovers: list[float] = []

    async def write() -> None:
        while not writing.is_set():
            await writer.log(FLOW)
            await asyncio.sleep(WRITE_INTERVAL_S)
        await writer.end()

    async def kill_the_watcher() -> None:
        watcher = await the_watcher([alive["a"], alive["b"]])
        name = "a" if watcher is alive["a"] else "b"
        seen = len(writer.written_at[FLOW])
        watcher.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await watcher.wait()
        alive[name] = None
        survivor = alive["b" if name == "a" else "a"]
        assert survivor is not None
        await the_watcher([survivor])
        takeovers.append(time.monotonic() - killed_at)
        await until(lambda: len(writer.written_at[FLOW]) > seen + 20, "writes after the takeover")
        alive[name] = await hub_processes(redis_server.url, port=watcher.port)

    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as http, asyncio.TaskGroup() as tasks:
        for tab in tabs:
            tasks.create_task(tab.run(http))
        writer_task = tasks.create_task(write())
        await until(lambda: all(len(tab.seqs) >= 30 for tab in tabs), "30 chunks in every tab")
        await kill_the_watcher()
        await until(lambda: all(len(tab.seqs) >= writer.counts[FLOW] - 50 for tab in tabs), "tabs catching up")
        await kill_the_watcher()
        await until(lambda: all(len(tab.seqs) >= writer.counts[FLOW] - 50 for tab in tabs), "tabs catching up")
        writing.set()
        await writer_task
        await until(lambda: all(tab.done.is_set() for tab in tabs), "the end marker in every tab")
    print(f"takeovers after kill -9: {', '.join(f'{s:.2f} s' for s in takeovers)}; {writer.counts[FLOW]} chunks")
    assert all(seconds < 5 for seconds in takeovers), takeovers
    for tab in tabs:
        assert_complete(tab, writer)


async def kill_pubsub_clients(redis_url: str) -> int:
    """Cut every edge's pub/sub connection, as a Redis operator (or a failover) would."""
    client = redis.Redis.from_url(redis_url)
    try:
        return int(await client.client_kill_filter(_type="pubsub"))
    finally:
        await client.aclose()


@pytest.mark.timeout(60)  # continuous writes through three cuts, on two processes
async def test_an_edges_connection_cut_fills_the_gap_from_history(
    mongo_backend, database_name, database, valkey_server
):
    """Every edge's pub/sub connection is cut, three times, under continuous writes: the edges
    reconnect, fill what they missed from the flows' histories, and no client notices."""
    server = valkey_server.start()
    settings_a = hub_settings(mongo_backend, database_name, server.url)
    settings_b = hub_settings(mongo_backend, database_name, server.url)
    writer = LogWriter(database, [FLOW])
    async with run_service(settings_a) as a, run_service(settings_b) as b:
        await until_ready(a)
        await until_ready(b)
        tabs = [Tab(f"tab-{s.base_url}", FLOW, lambda s=s: s.events_url(FLOW, snapshot="false")) for s in (a, b)]
        cuts = 0
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as http, asyncio.TaskGroup() as tasks:
            for tab in tabs:
                tasks.create_task(tab.run(http))
            await until(lambda: all(tab.connections for tab in tabs), "every tab connected")
            for _ in range(3):
                for _ in range(40):
                    await writer.log(FLOW)
                cuts += await kill_pubsub_clients(server.url)
                for _ in range(40):
                    await writer.log(FLOW)
                await until(lambda: all(len(tab.seqs) == writer.counts[FLOW] for tab in tabs), "tabs caught up")
            await writer.end()
            await until(lambda: all(tab.done.is_set() for tab in tabs), "the end marker in every tab")
    assert cuts >= 6, f"{cuts} pub/sub connections were cut"
    for tab in tabs:
        assert_complete(tab, writer)
        assert len(tab.connections) == 1, f"{tab.name} had to reconnect"


@contextlib.asynccontextmanager
async def one_tab(settings) -> AsyncIterator[tuple[RunningService, Tab]]:
    """A service, ready, and a tab reading FLOW on it until the block ends."""
    async with run_service(settings) as service:
        await until_ready(service)
        tab = Tab("tab", FLOW, lambda: service.events_url(FLOW, snapshot="false"))
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as http, asyncio.TaskGroup() as tasks:
            tasks.create_task(tab.run(http))
            yield service, tab


@pytest.mark.timeout(60)  # Redis down, up empty, and the clients' catch-up from the oplog
async def test_redis_restarted_without_persistence(mongo_backend, database_name, database, valkey_server, caplog):
    """Redis restarts empty (no persistence): readiness fails with the cause while it is down, and the log
    says so once; then the epoch changes, clients are cut off with a resumable RESYNC and resume from
    the oplog: nothing lost."""
    server = valkey_server.start()
    settings = hub_settings(mongo_backend, database_name, server.url)
    writer = LogWriter(database, [FLOW])
    async with one_tab(settings) as (service, tab):
        for _ in range(30):
            await writer.log(FLOW)
        await until(lambda: len(tab.seqs) == writer.counts[FLOW], "the first chunks")
        valkey_server.stop(server)
        for _ in range(30):
            await writer.log(FLOW)  # while Redis is down: only the oplog has them
        down = await readiness(service)
        server = valkey_server.start(port=server.port)
        await until_ready(service)
        for _ in range(30):
            await writer.log(FLOW)
        await writer.end()
        await until(lambda: tab.done.is_set(), "the end marker")
        interrupted = await metric(service, "changesync_resyncs_total", reason="interrupted")
    assert down["status"] == "not-ready" and down["checks"]["redisConnected"] is False
    assert interrupted >= 1, "the clients cut off by the new epoch are counted"
    assert "Connect" in down.get("lastError", "") or "onnection" in down.get("lastError", ""), down
    assert_complete(tab, writer)
    assert any(resync["reason"] == "interrupted" for resync in tab.resyncs), "the client was cut off and resumed"
    failures = [r.getMessage() for r in caplog.records if "connection to Redis failed" in r.getMessage()]
    assert 1 <= len(failures) <= 3, failures  # one line per distinct cause, not one per attempt


@pytest.mark.timeout(90)  # megabytes written while an edge is stopped, then its catch-up
async def test_a_slow_edge_that_redis_cuts_off_catches_up(hub_processes, database, valkey_server):
    """An edge stops reading (SIGSTOP) until Redis cuts it off (client-output-buffer-limit); once it
    runs again it reconnects and fills the gap: its clients, like the watcher's, miss nothing."""
    server = valkey_server.start("--client-output-buffer-limit", "pubsub 256kb 128kb 1")
    processes = [await hub_processes(server.url), await hub_processes(server.url)]
    watcher = await the_watcher(processes)
    edge = processes[1] if watcher is processes[0] else processes[0]
    tabs = [
        Tab(f"tab-{name}", FLOW, lambda p=p: p.events_url(FLOW, snapshot="false"))
        for name, p in (("watcher", watcher), ("edge", edge))
    ]
    writer = LogWriter(database, [FLOW])
    monitor = redis.Redis.from_url(server.url)

    async def disconnections() -> int:
        return int((await monitor.info("stats")).get("client_output_buffer_limit_disconnections", -1))

    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as http, asyncio.TaskGroup() as tasks:
        for tab in tabs:
            tasks.create_task(tab.run(http))
        await until(lambda: all(tab.connections for tab in tabs), "every tab connected")
        for _ in range(20):
            await writer.log(FLOW)
        await until(lambda: all(len(tab.seqs) == 20 for tab in tabs), "the first chunks")
        before = await disconnections()
        edge.signal(signal.SIGSTOP)
        try:
            for _ in range(4000):
                await writer.log(FLOW, padding=4000)
                if writer.counts[FLOW] % 50 == 0 and (before < 0 or await disconnections() > before):
                    break
            cut_off = await disconnections()
        finally:
            edge.signal(signal.SIGCONT)
        for _ in range(20):
            await writer.log(FLOW)
        await writer.end()
        await until(lambda: all(tab.done.is_set() for tab in tabs), "the end marker in every tab")
    await monitor.aclose()
    if before < 0:
        print("this server does not count client_output_buffer_limit_disconnections: the cut-off is not checked")
    else:
        assert cut_off > before, f"Redis did not cut the edge off after {writer.counts[FLOW]} chunks"
        print(f"Redis cut the stopped edge off after {writer.counts[FLOW] - 20} chunks of 4 KB")
    for tab in tabs:
        assert_complete(tab, writer)


# --- the ingest stream: services that speak Redis --------------------------------------------------


class IngestWriter:
    """A service that XADDs numbered LOG_STREAM chunks to the deployment's ingest stream."""

    def __init__(self, redis_url: str, database_name: str) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.stream = Keys.for_database(database_name).ingest
        self.count = 0

    async def add(self, flow: str, event: object) -> None:
        raw = event if isinstance(event, bytes) else orjson.dumps(event)
        await self.client.xadd(self.stream, {"flow": flow, "event": raw}, maxlen=100_000)

    async def log(self, flow: str = FLOW) -> None:
        data = {"executionId": "x1", "nodeId": "n0", "seq": self.count, "chunk": f"chunk {self.count} "}
        await self.add(flow, {"type": "LOG_STREAM", "data": {**data, "_internal": "never sent"}})
        self.count += 1

    async def end(self, flow: str = FLOW) -> None:
        await self.add(flow, {"type": "LOG_STREAM", "data": {"chunk": END}})

    async def pending(self) -> int:
        return int((await self.client.xpending(self.stream, INGEST_GROUP))["pending"])


async def test_the_ingest_stream_publishes_valid_entries_once_and_counts_the_rest(
    mongo_backend, database_name, redis_server
):
    """Entries XADDed by a service reach the clients of every process, filtered, in order, once; bad
    entries are acknowledged, counted by reason and logged, and reach nobody."""
    publishing, limits = {"event_types": ("LOG_STREAM",)}, {"max_event_bytes": 64 * 1024}
    settings_a = hub_settings(mongo_backend, database_name, redis_server.url, publish=publishing, limits=limits)
    settings_b = hub_settings(mongo_backend, database_name, redis_server.url, publish=publishing, limits=limits)
    ingest = IngestWriter(redis_server.url, database_name)
    async with run_service(settings_a) as a, run_service(settings_b) as b:
        await until_ready(a)
        await until_ready(b)
        async with (
            EventStream(a.events_url(FLOW, snapshot="false")) as on_a,
            EventStream(b.events_url(FLOW, snapshot="false")) as on_b,
        ):
            await ingest.log()
            await ingest.add(FLOW, b"{not json")
            await ingest.add(FLOW, {"type": "NO_SUCH_TYPE", "data": {}})
            await ingest.add("no/such flow", {"type": "LOG_STREAM", "data": {"seq": 99}})
            await ingest.client.xadd(ingest.stream, {"flow": FLOW})
            await ingest.add(FLOW, {"type": "LOG_STREAM", "data": {"seq": 98, "chunk": "x" * 100_000}})
            await ingest.log()
            await ingest.end()
            for stream in (on_a, on_b):
                documents = []
                while not documents or documents[-1].get("chunk") != END:
                    documents.append((await stream.next(EVENT_TIMEOUT_S)).data["document"])
                assert [document.get("seq") for document in documents] == [0, 1, None]
                assert all("_internal" not in document for document in documents)
        assert await ingest.pending() == 0
        refused = {
            reason: await metric(a, "changesync_publish_refused_total", reason=reason)
            + await metric(b, "changesync_publish_refused_total", reason=reason)
            for reason in ("not-json", "unknown-type", "invalid-flow", "not-an-entry", "too-large")
        }
        published = await metric(a, "changesync_published_total", type="LOG_STREAM") + await metric(
            b, "changesync_published_total", type="LOG_STREAM"
        )
    await ingest.client.aclose()
    assert refused == dict.fromkeys(refused, 1), refused
    assert published == 3


@pytest.mark.timeout(60)  # a takeover with continuous entries, on two processes
async def test_ingest_entries_survive_the_watchers_kill(hub_processes, database_name, redis_server):
    """kill -9 of the process that reads the ingest stream, under continuous XADDs: the new watcher
    publishes what was left, so every client gets every entry once, in order."""
    environ = {"CHANGESYNC_PUBLISH_EVENT_TYPES": "LOG_STREAM"}
    a = await hub_processes(redis_server.url, environ=environ)
    b = await hub_processes(redis_server.url, environ=environ)
    survivor: list[ServiceProcess] = []
    tabs = [
        Tab(f"tab-{index}", FLOW, lambda process=process: (survivor or [process])[0].events_url(FLOW, snapshot="false"))
        for index, process in enumerate((a, b))
    ]
    ingest = IngestWriter(redis_server.url, database_name)
    writing = asyncio.Event()

    async def write() -> None:
        while not writing.is_set():
            await ingest.log()
            await asyncio.sleep(WRITE_INTERVAL_S)
        await ingest.end()

    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as http, asyncio.TaskGroup() as tasks:
        for tab in tabs:
            tasks.create_task(tab.run(http))
        await until(lambda: all(tab.connections for tab in tabs), "every tab connected")
        writer_task = tasks.create_task(write())
        await until(lambda: all(len(tab.seqs) >= 30 for tab in tabs), "30 chunks in every tab")
        watcher = await the_watcher([a, b])
        survivor.append(b if watcher is a else a)
        watcher.signal(signal.SIGKILL)
        await watcher.wait()
        await the_watcher(survivor)
        seen = ingest.count
        await until(lambda: ingest.count > seen + 30, "entries after the takeover")
        writing.set()
        await writer_task
        await until(lambda: all(tab.done.is_set() for tab in tabs), "the end marker in every tab")
    assert await ingest.pending() == 0
    await ingest.client.aclose()
    for tab in tabs:
        assert [resync for resync in tab.resyncs if not resync["resumable"]] == [], tab.resyncs
        assert tab.seqs == list(range(ingest.count)), f"{tab.name}: gap, duplicate or disorder"
        assert len(tab.ids) == len(set(tab.ids)), f"{tab.name} received an id twice"


@pytest.mark.timeout(60)  # two servers, a replication, a promotion and the clients' catch-up
async def test_a_failover_makes_a_new_epoch(mongo_backend, database_name, database, valkey_server):
    """Redis fails over to a replica (its replication id changes): what the replica holds may lack the
    latest writes, so the watcher starts a new epoch; clients resume from the oplog: nothing lost."""
    primary = valkey_server.start()
    settings = hub_settings(mongo_backend, database_name, primary.url)
    writer = LogWriter(database, [FLOW])
    async with one_tab(settings) as (_service, tab):
        for _ in range(20):
            await writer.log(FLOW)
        await until(lambda: len(tab.seqs) == writer.counts[FLOW], "the first chunks")
        primary_client = redis.Redis.from_url(primary.url)
        epoch = await primary_client.hget(Keys.for_database(database_name).meta, "epoch")
        await primary_client.aclose()
        replica = valkey_server.start("--replicaof", "127.0.0.1", str(primary.port))
        replica_client = redis.Redis.from_url(replica.url)
        await until_replicated(replica_client)
        valkey_server.stop(primary)
        await replica_client.replicaof("NO", "ONE")
        # The promoted replica's data takes the primary's address, as a failover's virtual address
        # (or DNS) would.
        promoted = valkey_server.start("--replicaof", "127.0.0.1", str(replica.port), port=primary.port)
        promoted_client = redis.Redis.from_url(promoted.url)
        await until_replicated(promoted_client)
        await promoted_client.replicaof("NO", "ONE")
        for _ in range(20):
            await writer.log(FLOW)
        await until(lambda: len(tab.seqs) == writer.counts[FLOW], "the chunks after the failover")
        await writer.end()
        await until(lambda: tab.done.is_set(), "the end marker")
        new_epoch = await promoted_client.hget(Keys.for_database(database_name).meta, "epoch")
    await replica_client.aclose()
    await promoted_client.aclose()
    assert new_epoch != epoch
    assert_complete(tab, writer)
    assert any(resync["reason"] == "interrupted" for resync in tab.resyncs), "the client was cut off and resumed"


async def until_replicated(client: redis.Redis, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while (await client.info("replication")).get("master_link_status") != "up":  # noqa: ASYNC110
            await asyncio.sleep(0.05)
