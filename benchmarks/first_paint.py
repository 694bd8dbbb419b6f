"""Time to first paint: from a fresh connection's request to its ``SNAPSHOT``, on an idle and a busy database.

    python -m benchmarks.first_paint [--smoke] [--connections N] [--write-rate R]

One process runs SecantusDB (``EmbeddedServer``, in memory), the service (``create_app`` under
uvicorn, the settings of ``benchmarks.serve``: ``stream.max_await_time_ms`` at its default of
1000 ms, as deployed) and the client. The client opens N connections one after the other, without a
last event id, to a small flow (a board, three nodes), and times each from sending the request to
the end of the ``SNAPSHOT`` message; it closes the connection and opens the next one.

Two designs of the snapshot's barrier, measured in the same run on the same server:

- ``probe`` (the service's): the hub's barrier, or sooner a one-poll change stream after the hub's
  position that proves nothing the read holds is still to be published;
- ``barrier only`` (before): the probe disabled (``Snapshots.stream_passed`` answers no), so the
  snapshot waits for the live stream alone: a later change, or two empty polls after the read.

Idle: nothing is written. Busy: a writer inserts into another flow at ``--write-rate`` per second
(default 50) while the client connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import uvicorn

from ._common import benchmark_parser, print_table, summarize_ns, write_results
from .serve import changesync_settings, service_config

FLOW = "paint-flow"
OTHER_FLOW = "paint-busy"
DATABASE = "first_paint"
# What the target asks on an idle database (loopback, small flow).
TARGET_P50_MS = 50.0
TARGET_P99_MS = 150.0
# A connection that has no SNAPSHOT after this long counts as failed.
CONNECT_TIMEOUT_S = 15.0


@contextlib.contextmanager
def barrier_only() -> Iterator[None]:
    """The snapshot without its probe: what the service did before it had one."""
    from changesync.delivering.snapshot import Snapshots

    original = Snapshots.stream_passed

    async def never(self: Snapshots, position: str, after: Any) -> bool:
        return False

    Snapshots.stream_passed = never  # type: ignore[method-assign]
    try:
        yield
    finally:
        Snapshots.stream_passed = original  # type: ignore[method-assign]


async def seed(uri: str) -> None:
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        database = client[DATABASE]
        await database.flowboards.insert_one({"_id": FLOW, "name": "Paint", "ownerId": "bench", "nodes": []})
        await database.flow_nodes.insert_many(
            [{"_id": f"{FLOW}-n{i}", "flowId": FLOW, "type": "http", "position": {"x": i, "y": 0}} for i in range(3)]
        )
    finally:
        await client.close()


async def write_steadily(uri: str, rate_per_s: float, stop: asyncio.Event) -> int:
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    written = 0
    try:
        collection = client[DATABASE].flow_nodes
        started = time.monotonic()
        while not stop.is_set():
            await collection.insert_one({"flowId": OTHER_FLOW, "type": "http", "n": written})
            written += 1
            delay_s = started + written / rate_per_s - time.monotonic()
            if delay_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay_s)
    finally:
        await client.close()
    return written


async def time_to_snapshot_ns(client: httpx.AsyncClient, url: str) -> int:
    started = time.perf_counter_ns()
    async with client.stream("GET", url, headers={"Accept": "text/event-stream"}) as response:
        response.raise_for_status()
        seen_event = False
        async for line in response.aiter_lines():
            if line == "event: SNAPSHOT":
                seen_event = True
            elif seen_event and line == "":
                return time.perf_counter_ns() - started
    raise RuntimeError("the stream ended before its SNAPSHOT")


async def measure(base_url: str, connections: int) -> list[int]:
    timings = []
    async with httpx.AsyncClient(timeout=CONNECT_TIMEOUT_S) as client:
        for _ in range(connections):
            timings.append(await time_to_snapshot_ns(client, f"{base_url}/flows/{FLOW}/events"))
    return timings


@contextlib.asynccontextmanager
async def running_service(uri: str) -> AsyncIterator[str]:
    from changesync.app import create_app
    from changesync.check import run_check

    settings = changesync_settings(uri, DATABASE, free_port())
    report = await run_check(settings, fix=True)
    if report.failed:
        raise SystemExit(f"changesync check failed:\n{report.render()}")
    config = service_config(create_app(settings), settings)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        base_url = f"http://127.0.0.1:{settings.port}"
        async with httpx.AsyncClient() as client, asyncio.timeout(20):
            for _ in itertools.count():
                if (await client.get(f"{base_url}/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
        yield base_url
    finally:
        server.should_exit = True
        await task


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclasses.dataclass
class Scenario:
    name: str
    design: str
    write_rate: float


async def run_scenario(uri: str, scenario: Scenario, connections: int) -> dict[str, Any]:
    context = barrier_only() if scenario.design == "barrier only" else contextlib.nullcontext()
    with context:
        async with running_service(uri) as base_url:
            stop = asyncio.Event()
            writer = None
            if scenario.write_rate:
                writer = asyncio.create_task(write_steadily(uri, scenario.write_rate, stop))
                await asyncio.sleep(0.5)
            else:
                await asyncio.sleep(1.5)  # a few empty polls of the live stream: the database is idle
            try:
                timings = await measure(base_url, connections)
            finally:
                stop.set()
                written = await writer if writer is not None else 0
    return {
        "database": scenario.name,
        "design": scenario.design,
        "write_rate_per_s": scenario.write_rate,
        "writes": written,
        "time_to_snapshot": summarize_ns(timings),
    }


async def run(args: Any) -> dict[str, Any]:
    from changesync.embedded import EmbeddedServer

    connections = 5 if args.smoke else args.connections
    scenarios = [
        Scenario(database, design, rate)
        for database, rate in (("idle", 0.0), ("busy", args.write_rate))
        for design in ("barrier only", "probe")
    ]
    results = []
    with EmbeddedServer() as server:
        await seed(server.uri)
        for scenario in scenarios:
            results.append(await run_scenario(server.uri, scenario, connections))
    return {"connections": connections, "scenarios": results}


def main(argv: list[str] | None = None) -> None:
    parser = benchmark_parser("first_paint", __doc__ or "")
    parser.add_argument("--connections", type=int, default=100, help="connections per scenario (default 100)")
    parser.add_argument("--write-rate", type=float, default=50.0, help="writes/s on the busy database (default 50)")
    args = parser.parse_args(argv)
    data = asyncio.run(run(args))
    rows = []
    by_key = {(s["database"], s["design"]): s["time_to_snapshot"] for s in data["scenarios"]}
    for scenario in data["scenarios"]:
        figures = scenario["time_to_snapshot"]
        before = by_key[(scenario["database"], "barrier only")]
        ratio = before["p50_ms"] / figures["p50_ms"] if figures["p50_ms"] else None
        rows.append(
            [scenario["database"], scenario["design"], figures["p50_ms"], figures["p99_ms"], figures["max_ms"], ratio]
        )
    print_table(
        f"time to first SNAPSHOT, {data['connections']} connections each (ms)",
        ["database", "design", "p50", "p99", "max", "p50 before/this"],
        rows,
    )
    idle = by_key[("idle", "probe")]
    data["target"] = {"p50_ms": TARGET_P50_MS, "p99_ms": TARGET_P99_MS}
    data["target_met"] = (idle["p50_ms"] or 0) <= TARGET_P50_MS and (idle["p99_ms"] or 0) <= TARGET_P99_MS
    print(f"\nidle target (p50 <= {TARGET_P50_MS:g} ms, p99 <= {TARGET_P99_MS:g} ms) met: {data['target_met']}")
    data["mode"] = "smoke" if args.smoke else "full"
    path = write_results("first_paint", data, file_name=args.results_name, directory=args.results_dir)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
