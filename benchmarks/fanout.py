"""Fan-out on loopback: changesync vs the naive design vs a raw-asyncio ceiling, same clients, same load.

    python -m benchmarks.fanout [--smoke] [--rate 200] [--window-s 6] [--max-clients 5000] [--only NAME]

Every scenario starts fresh processes: SecantusDB (``EmbeddedServer``, in memory), the server under
test (``python -m benchmarks.serve changesync|naive`` under uvicorn, or ``benchmarks.ceiling_server``),
and one client process of raw asyncio SSE readers (``benchmarks._clients``). With two or more cores
the server under test is pinned to core 0 and everything else (database, writer, clients) to the
others, so the clients never take the server's core.

The writer (this process) inserts log chunks into ``flow_logs`` at a fixed rate, round-robin over the
scenario's flows, each stamped with ``t0 = time.time_ns()``; the clients compute write → client
latency from it. Measured over a window after a warm-up: deliveries/s, latency p50/p99, server CPU
(/proc/<pid>/stat) and RSS, database and client CPU, server-side change streams (``currentOp`` with
``idleCursors``), and for changesync the ``changesync_event_processing_seconds`` histogram and a
driver → last-subscriber trace (see ``benchmarks.serve``).

Two kinds of scenario: ``rate`` (the writer's fixed rate, default 200 writes/s: latency under a
typical load, and deliveries/s when that load exceeds capacity) and ``capacity`` (the writer as fast
as it goes: what the server delivers at saturation).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import multiprocessing
import signal
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from bson import ObjectId
from pymongo import AsyncMongoClient

from changesync.embedded import EmbeddedServer, free_port

from . import samples
from ._clients import client_main
from ._common import (
    RESULTS_DIR,
    ChildServer,
    CpuMeter,
    CpuPlan,
    benchmark_parser,
    histogram_delta,
    http_get,
    parse_histogram,
    print_table,
    raise_fd_limit,
    rss_bytes,
    start_profile,
    summarize_ns,
    summarize_profile,
    wait_for_quiet,
    write_results,
)

PROCESSING_HISTOGRAM = "changesync_event_processing_seconds"
# Writes in flight at once: the schedule holds even when one insert is slow.
MAX_WRITES_IN_FLIGHT = 64
# The rate a capacity scenario asks of the writer (writes/s); it gets what the database takes.
CAPACITY_RATE = 5000
# Documents per insert in capacity scenarios: less database and writer work per change event.
CAPACITY_BATCH = 50
# Inserts in flight in capacity scenarios: more starves the database's change-stream cursors.
CAPACITY_IN_FLIGHT = 2
TARGETS = {
    "added_latency_at_1000_subscribers": "p50 <= 1 ms, p99 <= 10 ms",
    "half_the_ceiling_deliveries_at_1000": "deliveries/s >= 50 % of the raw-asyncio ceiling",
    "ten_times_naive_deliveries_at_100": "deliveries/s >= 10x the naive design",
    "p99_at_most_a_tenth_of_naive_at_100": "write -> client p99 <= 1/10 of the naive design",
}


@dataclasses.dataclass(frozen=True)
class Scenario:
    system: str  # changesync | naive | ceiling
    clients: int
    flows: int
    rate: float
    kind: str = "rate"  # rate | capacity
    traced: bool = False  # changesync only: driver -> last subscriber trace (costs server CPU)

    @property
    def name(self) -> str:
        layout = "1 flow" if self.flows == 1 else f"{self.flows} flows"
        rate = "max" if self.kind == "capacity" else f"{self.rate:g}/s"
        return f"{self.system} {self.clients}x {layout} @{rate}" + (" traced" if self.traced else "")


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    rate = args.rate
    low = args.low_rate
    if args.smoke:
        planned = [
            Scenario("changesync", 10, 1, 50, traced=True),
            Scenario("naive", 10, 1, 50),
            Scenario("ceiling", 10, 1, 50),
        ]
    else:
        planned = [
            # 100 clients: changesync vs the naive design (and the ceiling), then both at saturation.
            Scenario("changesync", 100, 1, rate),
            Scenario("naive", 100, 1, rate),
            Scenario("ceiling", 100, 1, rate),
            Scenario("changesync", 100, 1, CAPACITY_RATE, "capacity"),
            Scenario("naive", 100, 1, CAPACITY_RATE, "capacity"),
            Scenario("changesync", 100, 10, rate),
            # 1,000 clients: at the typical rate (more than one core can write one by one) and at a
            # sustainable one, where added latency is measured (traced).
            Scenario("changesync", 1000, 1, rate),
            Scenario("ceiling", 1000, 1, rate),
            Scenario("changesync", 1000, 1, low, traced=True),
            Scenario("ceiling", 1000, 1, low),
            Scenario("changesync", 1000, 100, rate),
            # 5,000 clients, full mode only.
            Scenario("changesync", 5000, 1, low),
            Scenario("ceiling", 5000, 1, low),
            Scenario("changesync", 5000, 500, rate),
        ]
    chosen = [scenario for scenario in planned if scenario.clients <= args.max_clients]
    if args.only:
        chosen = [scenario for scenario in chosen if args.only in scenario.name]
    return chosen


# --- the writer ----------------------------------------------------------------------------------


async def write_log_chunks(
    collection: Any,
    *,
    rate: float,
    seconds: float,
    flows: int,
    window: tuple[int, int],
    batch: int = 1,
    in_flight_max: int = MAX_WRITES_IN_FLIGHT,
) -> dict[str, Any]:
    """Insert log chunks on schedule (``rate`` documents/s, for at most ``seconds``), ``batch`` per
    insert; count the documents stamped inside ``window``. Stops on time even when the database
    cannot keep up: then fewer documents are written than asked for."""
    loop = asyncio.get_running_loop()
    in_flight = asyncio.Semaphore(in_flight_max)
    execution_id = ObjectId()
    tasks: set[asyncio.Task[None]] = set()
    counts = {"written": 0, "in_window": 0, "errors": 0}

    async def insert(documents: list[dict[str, Any]]) -> None:
        try:
            if len(documents) == 1:
                await collection.insert_one(documents[0])
            else:
                await collection.insert_many(documents, ordered=False)
            counts["written"] += len(documents)
        except Exception:
            counts["errors"] += 1
        finally:
            in_flight.release()

    started = loop.time()
    deadline = started + seconds
    index = 0
    while loop.time() < deadline:
        delay = started + index / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(in_flight.acquire(), timeout=max(0.001, deadline - loop.time()))
            t0 = time.time_ns()
            if t0 > window[1] + 10**8:
                in_flight.release()
                break
            documents = [
                samples.log_chunk_document(
                    f"flow-{(index + offset) % flows}", index + offset, execution_id=execution_id, t0=t0
                )
                for offset in range(batch)
            ]
            if window[0] <= t0 <= window[1]:
                counts["in_window"] += batch
            index += batch
            task = asyncio.create_task(insert(documents))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=10)
    return counts


# --- helpers ---------------------------------------------------------------------------------------


async def receive(conn: Connection, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if conn.poll(0):
            return conn.recv()
        await asyncio.sleep(0.02)
    raise TimeoutError(f"no message from the client process within {timeout_s:g} s")


async def count_change_streams(client: AsyncMongoClient[dict[str, Any]], database: str) -> int | None:
    """Open change-stream cursors on ``database``, as the server reports them (``currentOp``, idle cursors)."""
    try:
        reply = await client.admin.command({"currentOp": 1, "idleCursors": True})
    except Exception:
        return None
    count = 0
    for operation in reply.get("inprog", []):
        namespace = str(operation.get("ns", ""))
        tailing = operation.get("tailable") and operation.get("awaitData")
        if operation.get("type") == "idleCursor" and tailing and namespace.startswith(database + "."):
            count += 1
    return count


def expected_frame_bytes() -> int:
    """The size of changesync's LOG_STREAM frame for the writer's documents (the ceiling writes as many)."""
    from changesync.codec import encode_token, to_change_event
    from changesync.frames import change_draft
    from changesync.settings import load_settings
    from filters import Drop, Pipeline

    change = samples.typical_events()["log chunk insert"]
    change["fullDocument"]["t0"] = time.time_ns()
    settings = load_settings(environ={})
    result = Pipeline(settings.routes).process_all(to_change_event(change))
    assert not isinstance(result, Drop)
    draft, _ = change_draft(result[0], max_bytes=settings.limits.max_event_bytes)
    # The id the in-process hub gives it: the position, the epoch and a sequence number.
    return len(draft.framed(encode_token(change["_id"]) + "~AAAAAAAA.1000").data)


# --- one scenario ----------------------------------------------------------------------------------


async def run_scenario(scenario: Scenario, args: argparse.Namespace, cpus: CpuPlan) -> dict[str, Any]:
    warmup_s, window_s, linger_s = args.warmup_s, args.window_s, args.linger_s
    port = free_port()
    database = f"bench_{scenario.system}_{int(time.time())}"
    result: dict[str, Any] = {"name": scenario.name, **dataclasses.asdict(scenario)}
    result["subscribers_per_flow"] = scenario.clients // scenario.flows
    db_server: EmbeddedServer | None = None
    mongo: AsyncMongoClient[dict[str, Any]] | None = None
    server: ChildServer | None = None
    process: multiprocessing.process.BaseProcess | None = None
    try:
        if scenario.system != "ceiling":
            db_server = EmbeddedServer()
            db_server.start()
            assert db_server.process is not None
            cpus.pin_rest(db_server.process.pid)
            mongo = AsyncMongoClient(db_server.uri)
            await mongo[database].create_collection("flow_logs")
        if scenario.system == "ceiling":
            server = ChildServer(
                "benchmarks.ceiling_server", ["--port", str(port)], port=port, ready_path="/healthz", cpus=cpus
            )
        else:
            assert db_server is not None
            options = ["--mongodb-uri", db_server.uri, "--database", database, "--port", str(port)]
            if scenario.system == "changesync":
                options += ["--max-connections", str(scenario.clients + 1000)]
                if scenario.traced and not args.no_trace:
                    options.append("--trace")
            ready = "/readyz" if scenario.system == "changesync" else "/healthz"
            server = ChildServer(
                "benchmarks.serve", [scenario.system, *options], port=port, ready_path=ready, cpus=cpus
            )
        await server.start()
        await asyncio.sleep(0.5)
        rss_idle = rss_bytes(server.pid)

        query = "?snapshot=false" if scenario.system == "changesync" else ""
        paths = [f"/flows/flow-{index % scenario.flows}/events{query}" for index in range(scenario.clients)]
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        config = {
            "port": port,
            "paths": paths,
            "cpus": sorted(cpus.rest),
            "connect_concurrency": 100,
            "line_end": "crlf" if scenario.system == "naive" else "lf",
        }
        process = context.Process(target=client_main, args=(config, child), daemon=True)
        process.start()
        assert process.pid is not None
        kind, connect = await receive(parent, 180)
        assert kind == "ready", kind
        result.update(
            connected=connect["connected"], connect_failures=connect["failures"], connect_s=connect["connect_s"]
        )

        if scenario.system == "naive":
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                _, body = await http_get(port, "/stats")
                if json.loads(body)["open_change_streams"] >= connect["connected"]:
                    break
                await asyncio.sleep(0.1)
            result["change_streams_in_app"] = json.loads((await http_get(port, "/stats"))[1])["open_change_streams"]
        if mongo is not None:
            result["change_streams_server_side"] = await count_change_streams(mongo, database)

        start_ns = time.time_ns() + int(warmup_s * 1e9)
        end_ns = start_ns + int(window_s * 1e9)
        parent.send(("window", start_ns, end_ns, linger_s))
        pids = {"server": server.pid, "clients": process.pid}
        if db_server is not None and db_server.process is not None:
            pids["database"] = db_server.process.pid
        import os

        pids["writer"] = os.getpid()
        meter = CpuMeter(pids)

        async def observe() -> dict[str, Any]:
            await asyncio.sleep(max(0.0, (start_ns - time.time_ns()) / 1e9))
            observed: dict[str, Any] = {}
            if scenario.system == "changesync":
                metrics = (await http_get(port, "/metrics"))[1].decode()
                observed["metrics_before"] = parse_histogram(metrics, PROCESSING_HISTOGRAM)
                if scenario.traced and not args.no_trace:
                    await http_get(port, "/_bench/trace?reset=1")
            meter.start()
            if scenario.system == "ceiling":
                observed_frames["start"] = json.loads((await http_get(port, "/stats"))[1])["frames_sent"]
            if args.profile:
                profile_path = RESULTS_DIR / "profiles" / (scenario.name.replace(" ", "_") + ".txt")
                observed["profiler"] = (start_profile(server.pid, window_s, profile_path), profile_path)
            await asyncio.sleep(max(0.0, (end_ns - time.time_ns()) / 1e9))
            observed["cpu"] = meter.stop()
            if scenario.system == "ceiling":
                observed_frames["end"] = json.loads((await http_get(port, "/stats"))[1])["frames_sent"]
            observed["rss"] = rss_bytes(server.pid)
            return observed

        observed_frames: dict[str, int] = {}
        observer = asyncio.create_task(observe())
        writer: dict[str, Any] = {}
        if scenario.system == "ceiling":
            frame_bytes = args.frame_bytes
            seconds = warmup_s + window_s
            await http_get(
                port,
                f"/control/start?rate={scenario.rate}&seconds={seconds}&flows={scenario.flows}&frame_bytes={frame_bytes}",
            )
            await asyncio.sleep(max(0.0, (end_ns - time.time_ns()) / 1e9))
            await observer
            writer = {"in_window": observed_frames["end"] - observed_frames["start"]}
        else:
            assert mongo is not None
            writer = await write_log_chunks(
                mongo[database]["flow_logs"],
                rate=scenario.rate,
                seconds=warmup_s + window_s,
                flows=scenario.flows,
                window=(start_ns, end_ns),
                batch=args.capacity_batch if scenario.kind == "capacity" else 1,
                in_flight_max=args.capacity_in_flight if scenario.kind == "capacity" else MAX_WRITES_IN_FLIGHT,
            )
        observed = await observer
        kind, stats = await receive(parent, linger_s + 60)
        assert kind == "result", kind
        if scenario.system == "changesync":
            after = parse_histogram((await http_get(port, "/metrics"))[1].decode(), PROCESSING_HISTOGRAM)
            result["processing_histogram"] = histogram_delta(observed["metrics_before"], after)
            if scenario.traced and not args.no_trace:
                result["trace"] = json.loads((await http_get(port, "/_bench/trace", timeout_s=60))[1])

        if "profiler" in observed:
            profiler, profile_path = observed["profiler"]
            if profiler is not None:
                await asyncio.get_running_loop().run_in_executor(None, profiler.wait)
                result["profile"] = {"file": str(profile_path), **summarize_profile(profile_path)}
        cpu = observed["cpu"]
        deliveries = stats["deliveries"]
        offered = writer["in_window"] * result["subscribers_per_flow"]
        result.update(
            writes_in_window=writer["in_window"],
            writes_per_s=round(writer["in_window"] / window_s, 1),
            writer_errors=writer.get("errors", 0),
            offered_deliveries_per_s=round(offered / window_s),
            deliveries_per_s=round(deliveries / window_s),
            delivered_fraction=round(deliveries / offered, 3) if offered else None,
            bytes_per_frame=round(stats["bytes"] / stats["frames"]) if stats["frames"] else None,
            mb_per_s=round(stats["bytes"] / window_s / 1e6, 2),
            latency_ms=summarize_ns(stats["latencies_ns"]),
            latency_sampled_every=stats["sample_every"],
            skipped_events=stats["skipped_events"],
            resyncs=stats["resyncs"],
            closed_early=stats["closed_early"],
            clients_with_nothing=stats["clients_with_nothing"],
            per_client_deliveries=[stats["per_client_min"], stats["per_client_max"]],
            cpu_pct={name: round(value * 100, 1) for name, value in cpu.items()},
            deliveries_per_server_cpu_s=round(deliveries / meter.used["server"]) if meter.used["server"] > 0 else None,
            server_rss_mb_before_clients=round(rss_idle / 1e6, 1),
            server_rss_mb=round(observed["rss"] / 1e6, 1),
            server_rss_kb_per_client=round((observed["rss"] - rss_idle) / 1e3 / max(1, connect["connected"]), 1),
        )
        return result
    finally:
        if process is not None:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
        if server is not None:
            server.stop()
        if mongo is not None:
            with contextlib.suppress(Exception):
                await mongo.close()
        if db_server is not None:
            db_server.stop()


# --- comparison ------------------------------------------------------------------------------------


def find(
    results: list[dict[str, Any]], system: str, clients: int, *, rate: float | None = None, kind: str = "rate"
) -> dict[str, Any] | None:
    """The first successful one-flow scenario of ``system`` with ``clients`` (and ``rate``, if given)."""
    for result in results:
        if "error" in result or result["flows"] != 1 or result["kind"] != kind:
            continue
        if (result["system"], result["clients"]) == (system, clients) and rate in (None, result["rate"]):
            return result
    return None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def compare(results: list[dict[str, Any]], args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ratios between the designs, and the issue's targets (met or not)."""
    small, large = (10, 10) if args.smoke else (100, 1000)
    rate, low = (50, 50) if args.smoke else (args.rate, args.low_rate)
    ratios: dict[str, Any] = {}
    targets: dict[str, Any] = {}

    changesync, naive = find(results, "changesync", small, rate=rate), find(results, "naive", small, rate=rate)
    if changesync and naive:
        ratios[f"vs_naive_at_{small}_clients_{rate:g}_writes_per_s"] = {
            "deliveries_per_s": _ratio(changesync["deliveries_per_s"], naive["deliveries_per_s"]),
            "naive_p99_over_changesync_p99": _ratio(naive["latency_ms"]["p99_ms"], changesync["latency_ms"]["p99_ms"]),
            "deliveries_per_server_cpu_s": _ratio(
                changesync["deliveries_per_server_cpu_s"], naive["deliveries_per_server_cpu_s"]
            ),
            "change_streams_server_side": {
                "changesync": changesync.get("change_streams_server_side"),
                "naive": naive.get("change_streams_server_side"),
                "naive_counted_in_app": naive.get("change_streams_in_app"),
            },
        }
        p99_ratio = ratios[f"vs_naive_at_{small}_clients_{rate:g}_writes_per_s"]["naive_p99_over_changesync_p99"]
        targets["p99_at_most_a_tenth_of_naive_at_100"] = {"naive_over_changesync": p99_ratio, "met": _ge(p99_ratio, 10)}
    changesync, naive = (
        find(results, "changesync", small, kind="capacity"),
        find(results, "naive", small, kind="capacity"),
    )
    if changesync and naive:
        ratio = _ratio(changesync["deliveries_per_s"], naive["deliveries_per_s"])
        ratios[f"vs_naive_at_{small}_clients_capacity"] = {"deliveries_per_s": ratio}
        targets["ten_times_naive_deliveries_at_100"] = {"ratio": ratio, "met": _ge(ratio, 10)}

    changesync, ceiling = find(results, "changesync", large, rate=rate), find(results, "ceiling", large, rate=rate)
    if changesync and ceiling:
        ratio = _ratio(changesync["deliveries_per_s"], ceiling["deliveries_per_s"])
        ratios[f"vs_ceiling_at_{large}_clients_{rate:g}_writes_per_s"] = {
            "deliveries_per_s": ratio,
            "latency_p50_ms": [changesync["latency_ms"]["p50_ms"], ceiling["latency_ms"]["p50_ms"]],
        }
        targets["half_the_ceiling_deliveries_at_1000"] = {"ratio": ratio, "met": _ge(ratio, 0.5)}
    changesync, ceiling = find(results, "changesync", large, rate=low), find(results, "ceiling", large, rate=low)
    if changesync and ceiling:
        ratios[f"vs_ceiling_at_{large}_clients_{low:g}_writes_per_s"] = {
            "deliveries_per_s": _ratio(changesync["deliveries_per_s"], ceiling["deliveries_per_s"]),
            "deliveries_per_server_cpu_s": _ratio(
                changesync["deliveries_per_server_cpu_s"], ceiling["deliveries_per_server_cpu_s"]
            ),
        }

    traced = next((r for r in results if r.get("traced") and "error" not in r and r["clients"] == large), None)
    if traced:
        histogram = traced.get("processing_histogram", {})
        last = traced.get("trace", {}).get("driver_to_last_subscriber", {})
        targets["added_latency_at_1000_subscribers"] = {
            "scenario": traced["name"],
            "on_change_histogram_p50_ms": histogram.get("p50_ms_estimate"),
            "on_change_histogram_p99_ms": histogram.get("p99_ms_estimate"),
            "to_last_subscriber_p50_ms": last.get("p50_ms"),
            "to_last_subscriber_p99_ms": last.get("p99_ms"),
            "met_by_histogram": _le(histogram.get("p50_ms_estimate"), 1.0)
            and _le(histogram.get("p99_ms_estimate"), 10.0),
            "met_to_last_subscriber": _le(last.get("p50_ms"), 1.0) and _le(last.get("p99_ms"), 10.0),
        }
    return ratios, targets


def _le(value: float | None, bound: float) -> bool:
    return value is not None and value <= bound


def _ge(value: float | None, bound: float) -> bool:
    return value is not None and value >= bound


# --- main --------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    # SIGTERM (e.g. from `timeout`) cancels the run, so that every server it started is stopped.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    cpus = CpuPlan()
    cpus.pin_self_to_rest()
    planned = scenarios(args)
    largest = max(scenario.clients for scenario in planned)
    fd_limit = raise_fd_limit(largest * 2 + 1024)
    if fd_limit < largest + 256:
        print(f"warning: the fd limit is {fd_limit}; scenarios above {fd_limit - 256} clients will fail")
    if args.frame_bytes is None:
        args.frame_bytes = expected_frame_bytes()
    results = []
    for scenario in planned:
        started = time.monotonic()
        background = await wait_for_quiet(max_wait_s=args.quiet_wait_s) if args.quiet_wait_s > 0 else None
        print(f"running {scenario.name} ...", flush=True)
        try:
            result = await run_scenario(scenario, args, cpus)
        except Exception as exc:
            result = {"name": scenario.name, **dataclasses.asdict(scenario), "error": f"{type(exc).__name__}: {exc}"}
            print(f"  failed: {result['error']}", flush=True)
            traceback.print_exc()
        result["scenario_s"] = round(time.monotonic() - started, 1)
        result["background_cpu_pct_before"] = None if background is None else round(background * 100, 1)
        results.append(result)

    ratios, targets = compare(results, args)
    rows = []
    for result in results:
        if "error" in result:
            rows.append([result["name"], "error", *[None] * 13])
            continue
        trace = result.get("trace", {}).get("driver_to_last_subscriber", {})
        histogram = result.get("processing_histogram", {})
        rows.append(
            [
                result["name"],
                f"{result['writes_per_s']:g}",
                result["offered_deliveries_per_s"],
                result["deliveries_per_s"],
                result["latency_ms"]["p50_ms"],
                result["latency_ms"]["p99_ms"],
                histogram.get("p50_ms_estimate"),
                histogram.get("p99_ms_estimate"),
                trace.get("p50_ms"),
                trace.get("p99_ms"),
                result["cpu_pct"]["server"],
                result["cpu_pct"].get("clients"),
                result["cpu_pct"].get("other"),
                result["server_rss_mb"],
                result.get("change_streams_server_side"),
            ]
        )
    print_table(
        "fanout" + (" [SMOKE: figures meaningless]" if args.smoke else ""),
        [
            "scenario",
            "writes/s",
            "offered/s",
            "deliv/s",
            "lat p50",
            "lat p99",
            "proc p50",
            "proc p99",
            "last p50",
            "last p99",
            "srv CPU%",
            "cli CPU%",
            "other%",
            "RSS MB",
            "streams",
        ],
        rows,
    )
    print("\nlat = write -> client (ms); proc = changesync_event_processing_seconds (ms, bucket estimate);")
    print("last = driver -> frame handed to the last subscriber's transport (ms, traced);")
    print("CPU% = share of one core: server under test, client process, rest of the machine (other)")
    print("\nratios:", json.dumps(ratios, indent=2))
    print("targets:", json.dumps(targets, indent=2))
    path = write_results(
        "fanout",
        {
            "mode": "smoke" if args.smoke else "full",
            "config": {
                "rate_per_s": args.rate,
                "capacity_rate_per_s": CAPACITY_RATE,
                "warmup_s": args.warmup_s,
                "window_s": args.window_s,
                "linger_s": args.linger_s,
                "ceiling_frame_bytes": args.frame_bytes,
                "cpus": cpus.describe(),
                "fd_limit": fd_limit,
                "quiet_wait_s": args.quiet_wait_s,
            },
            "scenarios": results,
            "ratios": ratios,
            "targets": {"goals": TARGETS, **targets},
        },
        file_name=args.results_name,
        directory=args.results_dir,
    )
    print(f"\nwrote {path}")
    return 1 if all("error" in result for result in results) else 0


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser("fanout", __doc__ or "")
    parser.add_argument("--rate", type=float, default=200.0, help="writes per second in rate scenarios")
    parser.add_argument("--low-rate", type=float, default=20.0, help="writes per second in sustainable-load scenarios")
    parser.add_argument("--window-s", type=float, default=None, help="measured seconds per scenario (default 6)")
    parser.add_argument("--max-clients", type=int, default=5000, help="skip scenarios with more clients")
    parser.add_argument("--only", default=None, help="run only scenarios whose name contains this")
    parser.add_argument("--capacity-batch", type=int, default=CAPACITY_BATCH, help=argparse.SUPPRESS)
    parser.add_argument("--capacity-in-flight", type=int, default=CAPACITY_IN_FLIGHT, help=argparse.SUPPRESS)
    parser.add_argument(
        "--quiet-wait-s", type=float, default=None, help="wait up to this long for a quiet machine before each scenario"
    )
    parser.add_argument("--profile", action="store_true", help="sample the server with py-spy during the window")
    parser.add_argument("--no-trace", action="store_true", help="no driver -> subscriber trace (for clean profiles)")
    parser.add_argument("--frame-bytes", type=int, default=None, help="ceiling frame size (default: changesync's)")
    args = parser.parse_args(argv)
    args.window_s = args.window_s if args.window_s is not None else (1.0 if args.smoke else 5.0)
    args.warmup_s = 0.5 if args.smoke else 1.0
    if args.quiet_wait_s is None:
        args.quiet_wait_s = 0.0 if args.smoke else 15.0
    args.linger_s = 0.5 if args.smoke else 1.0
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
