"""Hub mode on loopback: one process without a hub vs the hub with one and with two processes.

    python -m benchmarks.hub [--smoke] [--offered 400000] [--paced 20000] [--low-rate 20] [--only NAME]

Every scenario starts fresh processes: SecantusDB (``EmbeddedServer``, in memory), for the hub a
Valkey server (``benchmarks._valkey``, in memory), the changesync processes under test
(``python -m benchmarks.serve changesync``, with ``--hub-url`` in hub mode) and one client process of
raw asyncio SSE readers (``benchmarks._clients``, the fan-out benchmark's). Every client watches the
same flow. Modes:

- ``single``: one process, no hub (``LocalHub``): the fan-out benchmark's changesync.
- ``hub-1``: one process with ``hub.url``: it holds the watcher's lease, publishes every frame to
  Valkey and serves its clients from Valkey as every edge does.
- ``hub-2``: two processes with the same ``hub.url``; the first one started holds the lease (checked
  with ``/readyz``), and the clients split evenly across both.

Pinning (two or more cores): ``single`` and ``hub-1`` put the changesync process on core 0 and
everything else (database, Valkey, writer, clients) on the other cores, as the fan-out benchmark
does. ``hub-2`` pins its two processes to cores 0 and 1 and lets everything else run on every core:
on a 2-core machine the two edges share their cores with the clients, Valkey and the database.

The writer (this process) inserts log chunks stamped with ``t0 = time.time_ns()`` at a fixed rate;
the clients measure write → client latency from it. Kinds of scenario:

- ``load``: ``--offered`` deliveries/s asked of every mode (writes/s = offered / subscribers), more
  than one process delivers: deliveries/s at saturation;
- ``paced``: ``--paced`` deliveries/s, a load every mode keeps up with: latency under load;
- ``low-load``: ``--low-rate`` writes/s to a few clients, ``single`` and ``hub-1`` run
  ``--low-repeats`` times each, interleaved: the latency the hub path adds, write → client and,
  traced in the server process (``benchmarks.serve --trace``), driver → the last subscriber's
  transport;
- ``events``: ``--events-rate`` writes/s to a few clients: CPU per event (the watcher's, Valkey's).

Measured over a window after a warm-up: deliveries/s, latency p50/p99, CPU of every process
(/proc/<pid>/stat), Valkey's own CPU (``INFO cpu``: ``used_cpu_sys + used_cpu_user``) per event
written and per delivery (also net of what it used idle, measured before the writes start), its
``INFO commandstats``, and the watcher's ``changesync_event_processing_seconds``. Before the
scenarios, a probe times loopback round trips (a raw ``PING`` to Valkey from the server core), back
to back and after 20 ms idle: what each hop of the hub path costs on this machine at a low rate.

With the ``hiredis`` package importable, hub scenarios run with redis-py's pure-Python parser
(``benchmarks.serve --without-hiredis``: the declared dependencies), and ``hub-1`` runs once more
with hiredis in the ``load`` (1,000 subscribers), ``low-load`` and ``events`` kinds, for the comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import json
import multiprocessing
import os
import re
import signal
import socket
import time
import traceback
from typing import Any

from pymongo import AsyncMongoClient

from changesync.embedded import EmbeddedServer, free_port

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
    percentile,
    print_table,
    raise_fd_limit,
    rss_bytes,
    start_profile,
    summarize_ns,
    summarize_profile,
    wait_for_quiet,
    write_results,
)
from ._valkey import ValkeyServer
from .fanout import PROCESSING_HISTOGRAM, count_change_streams, receive, write_log_chunks

MODES = ("single", "hub-1", "hub-2")
KINDS = ("load", "paced", "low-load", "events")
SIZES = (1000, 5000)
# Deliveries/s asked in load scenarios: about twice what one process delivers on this machine.
DEFAULT_OFFERED_PER_S = 400_000
# Deliveries/s in paced scenarios: what every mode keeps up with (~20-40 % of a core for one process).
DEFAULT_PACED_PER_S = 20_000
# Clients of the low-load and events scenarios.
FEW_CLIENTS = 10
LOW_REPEATS = 2
# Writes/s of the events scenarios: many events, few deliveries, and the database's core not saturated.
DEFAULT_EVENTS_RATE = 500
FLOW = "flow-0"
# A scenario during whose window the rest of the machine used more than this share of a core (% of
# one core; quiet runs here stay below 10 %, kernel softirqs for loopback traffic included) is run again.
NOISY_OTHER_PCT = 25.0
# The pause before each round trip of the machine's probe: one write every 20 ms is the low-load rate.
PROBE_PAUSE_S = 0.02
TARGETS = {
    "hub_added_latency_at_low_load": "hub-1 minus single: p50 <= 1 ms, p99 <= 3 ms",
    "two_edges_deliveries": "hub-2 deliveries/s >= 1.7x one process",
}
ADDED_P50_MS, ADDED_P99_MS, TWO_EDGES_RATIO = 1.0, 3.0, 1.7


@dataclasses.dataclass(frozen=True)
class Scenario:
    mode: str  # single | hub-1 | hub-2
    clients: int
    rate: float
    kind: str  # one of KINDS
    hiredis: bool = False
    repeat: int = 1

    def __post_init__(self) -> None:
        if self.mode not in MODES or self.kind not in KINDS:
            raise ValueError(f"mode must be one of {MODES} and kind one of {KINDS}, got {self.mode!r}, {self.kind!r}")

    @property
    def processes(self) -> int:
        return 2 if self.mode == "hub-2" else 1

    @property
    def hub(self) -> bool:
        return self.mode != "single"

    @property
    def traced(self) -> bool:
        """Low-load scenarios of one process trace the driver → transport time (``benchmarks.serve --trace``)."""
        return self.kind == "low-load" and self.processes == 1

    @property
    def name(self) -> str:
        name = f"{self.mode} {self.clients}x 1 flow @{self.rate:g}/s {self.kind}"
        if self.hiredis:
            name += " hiredis"
        return name + (f" #{self.repeat}" if self.kind == "low-load" else "")


def hiredis_installed() -> bool:
    return importlib.util.find_spec("hiredis") is not None


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    with_hiredis = hiredis_installed() and not args.no_hiredis_runs
    if args.smoke:
        # Every mode once, the trace and the low-load comparison: a few seconds each.
        planned = [Scenario(mode, 4, args.low_rate, "low-load") for mode in ("single", "hub-1")]
        planned.append(Scenario("hub-2", 10, 50, "load"))
        if with_hiredis:
            planned.append(Scenario("hub-1", 10, 50, "load", hiredis=True))
        return planned
    planned = []
    for kind, offered in (("load", args.offered), ("paced", args.paced)):
        for clients in SIZES:
            if clients <= args.max_clients:
                planned += [Scenario(mode, clients, offered / clients, kind) for mode in MODES]
    for repeat in range(1, args.low_repeats + 1):
        planned += [
            Scenario(mode, FEW_CLIENTS, args.low_rate, "low-load", repeat=repeat) for mode in ("single", "hub-1")
        ]
    planned += [Scenario(mode, FEW_CLIENTS, args.events_rate, "events") for mode in ("single", "hub-1")]
    if with_hiredis:
        planned += [
            Scenario("hub-1", SIZES[0], args.offered / SIZES[0], "load", hiredis=True),
            Scenario("hub-1", FEW_CLIENTS, args.low_rate, "low-load", hiredis=True),
            Scenario("hub-1", FEW_CLIENTS, args.events_rate, "events", hiredis=True),
        ]
    if args.only:
        planned = [scenario for scenario in planned if args.only in scenario.name]
    return planned


# --- pinning -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where the processes of one scenario run."""

    servers: list[CpuPlan]
    """One plan per changesync process: its ``server`` cores are the process's."""
    rest: CpuPlan
    """Its ``rest`` cores: database, Valkey, writer, clients."""

    def describe(self) -> dict[str, Any]:
        if not self.rest.enabled:
            return {"pinned": False}
        return {
            "pinned": True,
            "changesync_cpus": [sorted(plan.server) for plan in self.servers],
            "other_cpus": sorted(self.rest.rest),
        }


def placement(scenario: Scenario, cpus: CpuPlan, pinning: str) -> Placement:
    """``split``: one core per changesync process, everything else on every core; ``free``: nothing
    pinned (several processes only)."""
    if scenario.processes == 1 or not cpus.enabled:
        return Placement([cpus] * scenario.processes, cpus)
    cores = cpus.cores
    if pinning == "free":
        everywhere = cpus.replaced(server=cores, rest=cores)
        return Placement([everywhere] * scenario.processes, everywhere)
    ordered = sorted(cores)
    servers = [cpus.replaced(server={ordered[index % len(ordered)]}) for index in range(scenario.processes)]
    return Placement(servers, cpus.replaced(rest=cores))


# --- the machine's round trips ------------------------------------------------------------------


def probe_round_trips(cpus: CpuPlan, *, rounds: int, pause_s: float) -> dict[str, Any]:
    """A raw ``PING`` to a fresh Valkey from the server core, back to back and after ``pause_s`` idle.

    Run in a thread of its own (it blocks and pins itself). Every hop of the hub path is such a
    round trip's half; after a pause, both ends wake up from idle, as they do at a low write rate.
    """
    valkey = ValkeyServer()
    valkey.start()
    try:
        cpus.pin_rest(valkey.pid)
        if cpus.enabled:
            os.sched_setaffinity(0, cpus.server)  # this thread only
        figures = {}
        with socket.create_connection(("127.0.0.1", valkey.port)) as connection:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for label, pause in (("back_to_back", 0.0), (f"after_{pause_s * 1000:g}_ms_idle", pause_s)):
                samples = []
                for _ in range(rounds):
                    if pause:
                        time.sleep(pause)
                    started = time.perf_counter_ns()
                    connection.sendall(b"PING\r\n")
                    connection.recv(64)
                    samples.append(time.perf_counter_ns() - started)
                samples.sort()
                figures[label] = {
                    "p50_us": round((percentile(samples, 0.5) or 0) / 1e3, 1),
                    "p99_us": round((percentile(samples, 0.99) or 0) / 1e3, 1),
                }
        return figures
    finally:
        valkey.stop()


# --- one scenario ----------------------------------------------------------------------------------


async def role_of(port: int) -> str:
    _, body = await http_get(port, "/readyz")
    return str(json.loads(body).get("role", "single")) if body else "unknown"


def window_of(scenario: Scenario, args: argparse.Namespace) -> float:
    windows = {"load": args.window_s, "paced": args.paced_window_s, "low-load": args.low_window_s}
    return float(windows.get(scenario.kind, args.window_s))


async def start_servers(
    scenario: Scenario, place: Placement, mongodb_uri: str, database: str, valkey: ValkeyServer | None
) -> list[ChildServer]:
    """Start the scenario's changesync processes one after the other: the first one takes the lease."""
    servers: list[ChildServer] = []
    try:
        for index in range(scenario.processes):
            port = free_port()
            options = ["--mongodb-uri", mongodb_uri, "--database", database, "--port", str(port)]
            options += ["--max-connections", str(scenario.clients + 1000)]
            if scenario.traced:
                options.append("--trace")
            if valkey is not None:
                options += ["--hub-url", valkey.url]
                if not scenario.hiredis:
                    options.append("--without-hiredis")
            server = ChildServer(
                "benchmarks.serve", ["changesync", *options], port=port, ready_path="/readyz", cpus=place.servers[index]
            )
            servers.append(server)
            await server.start()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def command_stats_delta(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """Calls and µs per Valkey command between two readings, busiest first."""
    delta = {}
    for name, (calls, usec) in after.items():
        calls_before, usec_before = before.get(name, (0, 0))
        if calls > calls_before:
            delta[name] = {"calls": calls - calls_before, "usec": usec - usec_before}
    return dict(sorted(delta.items(), key=lambda item: item[1]["usec"], reverse=True))


async def run_scenario(
    scenario: Scenario, args: argparse.Namespace, cpus: CpuPlan, latencies: dict[str, list[int]]
) -> dict[str, Any]:
    window_s = window_of(scenario, args)
    warmup_s, linger_s = args.warmup_s, args.linger_s
    database = f"bench_hub_{int(time.time())}"
    result: dict[str, Any] = {"name": scenario.name, **dataclasses.asdict(scenario), "flows": 1}
    place = placement(scenario, cpus, args.hub_2_pinning)
    place.rest.pin_self_to_rest()
    result["cpus"] = place.describe()
    db_server: EmbeddedServer | None = None
    valkey: ValkeyServer | None = None
    mongo: AsyncMongoClient[dict[str, Any]] | None = None
    servers: list[ChildServer] = []
    process: multiprocessing.process.BaseProcess | None = None
    loop = asyncio.get_running_loop()
    try:
        db_server = EmbeddedServer()
        db_server.start()
        assert db_server.process is not None
        place.rest.pin_rest(db_server.process.pid)
        mongo = AsyncMongoClient(db_server.uri)
        await mongo[database].create_collection("flow_logs")
        if scenario.hub:
            valkey = ValkeyServer()
            await loop.run_in_executor(None, valkey.start)
            place.rest.pin_rest(valkey.pid)
            result["valkey_version"] = await loop.run_in_executor(None, getattr, valkey, "version")

        servers = await start_servers(scenario, place, db_server.uri, database, valkey)
        result["roles"] = [await role_of(server.port) for server in servers]
        if scenario.hub and result["roles"][0] != "watcher":
            raise RuntimeError(f"the first process started is not the watcher: roles {result['roles']}")
        await asyncio.sleep(0.5)
        rss_idle = [rss_bytes(server.pid) for server in servers]

        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        config = {
            "ports": [server.port for server in servers],
            "paths": [f"/flows/{FLOW}/events?snapshot=false"] * scenario.clients,
            "cpus": sorted(place.rest.rest),
            "connect_concurrency": 100,
            "line_end": "lf",
        }
        process = context.Process(target=client_main, args=(config, child), daemon=True)
        process.start()
        assert process.pid is not None
        kind, connect = await receive(parent, 180)
        assert kind == "ready", kind
        result.update(
            connected=connect["connected"], connect_failures=connect["failures"], connect_s=connect["connect_s"]
        )
        result["change_streams_server_side"] = await count_change_streams(mongo, database)
        valkey_idle_pct = None
        if valkey is not None:
            # What Valkey uses with the clients connected and nothing written (lease renewals, its cron).
            idle_started, idle_cpu = time.perf_counter(), await loop.run_in_executor(None, valkey.cpu_seconds)
            await asyncio.sleep(args.valkey_idle_s)
            idle_used = await loop.run_in_executor(None, valkey.cpu_seconds) - idle_cpu
            valkey_idle_pct = idle_used / (time.perf_counter() - idle_started) * 100

        start_ns = time.time_ns() + int(warmup_s * 1e9)
        end_ns = start_ns + int(window_s * 1e9)
        parent.send(("window", start_ns, end_ns, linger_s))
        pids = {f"server-{index}": server.pid for index, server in enumerate(servers)}
        pids.update(clients=process.pid, database=db_server.process.pid, writer=os.getpid())
        if valkey is not None:
            pids["valkey"] = valkey.pid
        meter = CpuMeter(pids)
        watcher_port = servers[0].port

        async def observe() -> dict[str, Any]:
            await asyncio.sleep(max(0.0, (start_ns - time.time_ns()) / 1e9))
            observed: dict[str, Any] = {}
            metrics = (await http_get(watcher_port, "/metrics"))[1].decode()
            observed["metrics_before"] = parse_histogram(metrics, PROCESSING_HISTOGRAM)
            if scenario.traced:
                await http_get(watcher_port, "/_bench/trace?reset=1")
            meter.start()
            if valkey is not None:
                observed["valkey_before"] = await loop.run_in_executor(None, valkey.cpu_seconds)
                observed["commands_before"] = await loop.run_in_executor(None, valkey.command_stats)
            if args.profile:
                observed["profilers"] = []
                for index, server in enumerate(servers):
                    stem = re.sub(r"[^A-Za-z0-9.@-]+", "_", scenario.name)
                    path = RESULTS_DIR / "profiles" / f"hub_{stem}_server-{index}.txt"
                    observed["profilers"].append((start_profile(server.pid, window_s, path), path))
            await asyncio.sleep(max(0.0, (end_ns - time.time_ns()) / 1e9))
            observed["cpu"] = meter.stop()
            if valkey is not None:
                observed["valkey_after"] = await loop.run_in_executor(None, valkey.cpu_seconds)
                observed["commands_after"] = await loop.run_in_executor(None, valkey.command_stats)
            observed["rss"] = [rss_bytes(server.pid) for server in servers]
            return observed

        observer = asyncio.create_task(observe())
        writer = await write_log_chunks(
            mongo[database]["flow_logs"],
            rate=scenario.rate,
            seconds=warmup_s + window_s,
            flows=1,
            window=(start_ns, end_ns),
        )
        observed = await observer
        kind, stats = await receive(parent, linger_s + 60)
        assert kind == "result", kind
        metrics = (await http_get(watcher_port, "/metrics"))[1].decode()
        result["processing_histogram"] = histogram_delta(
            observed["metrics_before"], parse_histogram(metrics, PROCESSING_HISTOGRAM)
        )
        if scenario.traced:
            result["trace"] = json.loads((await http_get(watcher_port, "/_bench/trace", timeout_s=60))[1])
        if observed.get("profilers"):
            result["profiles"] = []
            for profiler, path in observed["profilers"]:
                if profiler is not None:
                    await loop.run_in_executor(None, profiler.wait)
                    result["profiles"].append({"file": str(path), **summarize_profile(path)})

        deliveries = stats["deliveries"]
        written = writer["in_window"]
        offered = written * scenario.clients
        server_cpu_s = sum(meter.used[name] for name in pids if name.startswith("server-"))
        latencies[scenario.name] = stats["latencies_ns"]
        result.update(
            window_s=window_s,
            writes_in_window=written,
            writes_per_s=round(written / window_s, 1),
            writer_errors=writer.get("errors", 0),
            offered_deliveries_per_s=round(offered / window_s),
            deliveries_per_s=round(deliveries / window_s),
            delivered_fraction=round(deliveries / offered, 3) if offered else None,
            deliveries_per_server={
                f"server-{index}": stats["deliveries_per_port"].get(server.port, 0)
                for index, server in enumerate(servers)
            },
            bytes_per_frame=round(stats["bytes"] / stats["frames"]) if stats["frames"] else None,
            latency_ms=summarize_ns(list(stats["latencies_ns"])),
            latency_sampled_every=stats["sample_every"],
            skipped_events=stats["skipped_events"],
            resyncs=stats["resyncs"],
            closed_early=stats["closed_early"],
            clients_with_nothing=stats["clients_with_nothing"],
            per_client_deliveries=[stats["per_client_min"], stats["per_client_max"]],
            cpu_pct={name: round(value * 100, 1) for name, value in observed["cpu"].items()},
            changesync_cpu_pct=round(server_cpu_s / meter.seconds * 100, 1),
            changesync_cpu_us_per_event=round(server_cpu_s / written * 1e6, 1) if written else None,
            deliveries_per_changesync_cpu_s=round(deliveries / server_cpu_s) if server_cpu_s > 0 else None,
            server_rss_mb_before_clients=[round(rss / 1e6, 1) for rss in rss_idle],
            server_rss_mb=[round(rss / 1e6, 1) for rss in observed["rss"]],
        )
        if valkey is not None and valkey_idle_pct is not None:
            used_s = observed["valkey_after"] - observed["valkey_before"]
            net_s = max(0.0, used_s - valkey_idle_pct / 100 * meter.seconds)
            result["valkey"] = {
                "info_cpu_s": round(used_s, 4),
                "info_cpu_pct": round(used_s / meter.seconds * 100, 2),
                "idle_cpu_pct": round(valkey_idle_pct, 2),
                "us_per_event": round(used_s / written * 1e6, 2) if written else None,
                "us_per_event_net_of_idle": round(net_s / written * 1e6, 2) if written else None,
                "ns_per_delivery": round(used_s / deliveries * 1e9, 1) if deliveries else None,
                "commands": command_stats_delta(observed["commands_before"], observed["commands_after"]),
            }
        return result
    finally:
        if process is not None:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
        for server in reversed(servers):
            server.stop()
        if mongo is not None:
            await mongo.close()
        if valkey is not None:
            valkey.stop()
        if db_server is not None:
            db_server.stop()
        cpus.pin_self_to_rest()


async def run_until_quiet(
    scenario: Scenario, args: argparse.Namespace, cpus: CpuPlan, latencies: dict[str, list[int]]
) -> dict[str, Any]:
    """Run a scenario; again (at most ``--retries`` times) while the rest of the machine used more than
    ``NOISY_OTHER_PCT`` of a core during its window. The discarded runs stay in ``noisy_runs``."""
    noisy: list[dict[str, Any]] = []
    while True:
        started = time.monotonic()
        background = await wait_for_quiet(max_wait_s=args.quiet_wait_s) if args.quiet_wait_s > 0 else None
        print(f"running {scenario.name} ...", flush=True)
        try:
            result = await run_scenario(scenario, args, cpus, latencies)
        except Exception as exc:
            result = {"name": scenario.name, **dataclasses.asdict(scenario), "error": f"{type(exc).__name__}: {exc}"}
            print(f"  failed: {result['error']}", flush=True)
            traceback.print_exc()
        result["scenario_s"] = round(time.monotonic() - started, 1)
        result["background_cpu_pct_before"] = None if background is None else round(background * 100, 1)
        other = result.get("cpu_pct", {}).get("other", 0.0)
        result["noisy"] = other > NOISY_OTHER_PCT
        if not result["noisy"] or len(noisy) >= args.retries:
            result["noisy_runs"] = noisy
            return result
        print(f"  the rest of the machine used {other:g} % of a core: running it again", flush=True)
        noisy.append({key: result.get(key) for key in ("deliveries_per_s", "latency_ms", "cpu_pct")})


# --- comparison ------------------------------------------------------------------------------------


def find(
    results: list[dict[str, Any]], mode: str, clients: int, kind: str, *, hiredis: bool = False
) -> dict[str, Any] | None:
    for result in results:
        if "error" not in result and (result["mode"], result["clients"], result["kind"], result["hiredis"]) == (
            mode,
            clients,
            kind,
            hiredis,
        ):
            return result
    return None


def pooled_latency(
    results: list[dict[str, Any]], latencies: dict[str, list[int]], mode: str, *, hiredis: bool = False
) -> dict[str, Any] | None:
    """Write → client p50/p99 over every low-load run of ``mode`` together, and each run's."""
    runs = [
        result
        for result in results
        if "error" not in result
        and result["kind"] == "low-load"
        and (result["mode"], result["hiredis"]) == (mode, hiredis)
    ]
    if not runs:
        return None
    pooled = sorted(value for run in runs for value in latencies.get(run["name"], []))
    traces = [run["trace"]["driver_to_last_subscriber"] for run in runs if run.get("trace", {}).get("events_delivered")]
    return {
        "runs": len(runs),
        "samples": len(pooled),
        "p50_ms": _ms(percentile(pooled, 0.50)),
        "p99_ms": _ms(percentile(pooled, 0.99)),
        "p50_ms_per_run": [run["latency_ms"]["p50_ms"] for run in runs],
        "p99_ms_per_run": [run["latency_ms"]["p99_ms"] for run in runs],
        "driver_to_last_subscriber_p50_ms": _mean([trace["p50_ms"] for trace in traces]),
        "driver_to_last_subscriber_p99_ms": _mean([trace["p99_ms"] for trace in traces]),
    }


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value / 1e6, 3)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def _side_by_side(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {
        "deliveries_per_s": [a["deliveries_per_s"], b["deliveries_per_s"]],
        "deliveries_ratio": _ratio(a["deliveries_per_s"], b["deliveries_per_s"]),
        "latency_p50_ms": [a["latency_ms"]["p50_ms"], b["latency_ms"]["p50_ms"]],
        "latency_p99_ms": [a["latency_ms"]["p99_ms"], b["latency_ms"]["p99_ms"]],
        "changesync_cpu_pct": [a["changesync_cpu_pct"], b["changesync_cpu_pct"]],
        "deliveries_per_changesync_cpu_s": [a["deliveries_per_changesync_cpu_s"], b["deliveries_per_changesync_cpu_s"]],
        "changesync_cpu_us_per_event": [a["changesync_cpu_us_per_event"], b["changesync_cpu_us_per_event"]],
    }


def compare(results: list[dict[str, Any]], latencies: dict[str, list[int]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ratios between the modes, and the issue's targets (met or not)."""
    ratios: dict[str, Any] = {}
    targets: dict[str, Any] = {}
    two_edges = []
    for kind in ("load", "paced"):
        for clients in sorted({result["clients"] for result in results if result["kind"] == kind}):
            single, hub_1, hub_2 = (find(results, mode, clients, kind) for mode in MODES)
            pairs = {
                "hub-1 vs single": (hub_1, single),
                "hub-2 vs single": (hub_2, single),
                "hub-2 vs hub-1": (hub_2, hub_1),
            }
            entry = {label: _side_by_side(a, b) for label, (a, b) in pairs.items() if a and b}
            if entry:
                ratios[f"{kind}, {clients} subscribers on one flow"] = entry
            if kind == "load" and "hub-2 vs single" in entry:
                two_edges.append({"subscribers": clients, "ratio": entry["hub-2 vs single"]["deliveries_ratio"]})
    if two_edges:
        targets["two_edges_deliveries"] = {
            "measured": two_edges,
            "met": all(_ge(item["ratio"], TWO_EDGES_RATIO) for item in two_edges),
        }

    single, hub_1 = pooled_latency(results, latencies, "single"), pooled_latency(results, latencies, "hub-1")
    if single and hub_1:
        added_p50 = _difference(hub_1["p50_ms"], single["p50_ms"])
        added_p99 = _difference(hub_1["p99_ms"], single["p99_ms"])
        ratios["low load: write -> client latency"] = {
            "single": single,
            "hub-1": hub_1,
            "added_p50_ms": added_p50,
            "added_p99_ms": added_p99,
            # Inside the server process: driver -> the last subscriber's transport (mean of the runs).
            "added_in_process_p50_ms": _difference(
                hub_1["driver_to_last_subscriber_p50_ms"], single["driver_to_last_subscriber_p50_ms"]
            ),
            "added_in_process_p99_ms": _difference(
                hub_1["driver_to_last_subscriber_p99_ms"], single["driver_to_last_subscriber_p99_ms"]
            ),
        }
        targets["hub_added_latency_at_low_load"] = {
            "added_p50_ms": added_p50,
            "added_p99_ms": added_p99,
            "met": _le(added_p50, ADDED_P50_MS) and _le(added_p99, ADDED_P99_MS),
        }

    single_events = next(
        (r for r in results if "error" not in r and (r["mode"], r["kind"]) == ("single", "events")), None
    )
    hub_events = find(results, "hub-1", FEW_CLIENTS, "events")
    if single_events and hub_events:
        ratios["events: CPU per event"] = {
            "changesync_cpu_us_per_event": {
                "single": single_events["changesync_cpu_us_per_event"],
                "hub-1": hub_events["changesync_cpu_us_per_event"],
            },
            "valkey_us_per_event": hub_events.get("valkey", {}).get("us_per_event"),
        }

    hiredis: dict[str, Any] = {}
    for result in results:
        if "error" in result or not result["hiredis"] or result["kind"] == "low-load":
            continue
        plain = find(results, "hub-1", result["clients"], result["kind"])
        if plain:
            hiredis[f"{result['kind']}, {result['clients']} subscribers"] = _side_by_side(result, plain)
    low_hiredis = pooled_latency(results, latencies, "hub-1", hiredis=True)
    if low_hiredis and hub_1:
        hiredis["low load"] = {
            "latency_p50_ms": [low_hiredis["p50_ms"], hub_1["p50_ms"]],
            "latency_p99_ms": [low_hiredis["p99_ms"], hub_1["p99_ms"]],
        }
    if hiredis:
        ratios["hiredis vs redis-py's parser"] = {"order": "[with hiredis, without]", **hiredis}
    return ratios, targets


def _le(value: float | None, bound: float) -> bool:
    return value is not None and value <= bound


def _ge(value: float | None, bound: float) -> bool:
    return value is not None and value >= bound


# --- output ----------------------------------------------------------------------------------------

PINNING_SHARED = (
    "single and hub-1: changesync on core 0; database, Valkey, writer and clients on the other cores. "
    "hub-2: its two processes on cores 0 and 1, everything else on every core. On 2 cores the two edges "
    "of hub-2 share them with the clients, Valkey and the database: this cannot show what two edges on "
    "cores of their own deliver."
)
PINNING_NONE = "none (fewer than 2 cores): every process shares every core."
NOTES = """\
Every client watches one flow. lat = write -> client (ms); proc = the watcher's
changesync_event_processing_seconds (ms, bucket estimate); last = driver -> frame handed to the last
subscriber's transport (ms, traced: low-load runs of one process); CPU% = share of one core: changesync (its
processes together, and each one), Valkey (INFO cpu), clients, the rest of the machine (other: kernel
softirqs for loopback traffic are counted there); vk us/ev = Valkey's INFO cpu (used_cpu_sys +
used_cpu_user) over the window / events written (net: less what it used idle); vk ns/del = the same
/ deliveries. (!): the rest of the machine used more than {noisy:g} % of a core in every run of it:
unreliable. Pinning: {pinning}"""


def print_results(results: list[dict[str, Any]], ratios: dict[str, Any], targets: dict[str, Any], smoke: bool) -> None:
    rows = []
    for result in results:
        if "error" in result:
            rows.append([result["name"], "error", *[None] * 16])
            continue
        histogram = result.get("processing_histogram", {})
        trace = result.get("trace", {}).get("driver_to_last_subscriber", {})
        valkey = result.get("valkey", {})
        cpu = result["cpu_pct"]
        each = [f"{cpu[name]:g}" for name in sorted(cpu) if name.startswith("server-")]
        rows.append(
            [
                result["name"] + (" (!)" if result.get("noisy") else ""),
                f"{result['writes_per_s']:g}",
                result["offered_deliveries_per_s"],
                result["deliveries_per_s"],
                result["latency_ms"]["p50_ms"],
                result["latency_ms"]["p99_ms"],
                histogram.get("p50_ms_estimate"),
                histogram.get("p99_ms_estimate"),
                trace.get("p50_ms"),
                trace.get("p99_ms"),
                result["changesync_cpu_pct"],
                "+".join(each) if len(each) > 1 else None,
                valkey.get("info_cpu_pct"),
                valkey.get("us_per_event"),
                valkey.get("us_per_event_net_of_idle"),
                valkey.get("ns_per_delivery"),
                cpu.get("clients"),
                cpu.get("other"),
            ]
        )
    print_table(
        "hub" + (" [SMOKE: figures meaningless]" if smoke else ""),
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
            "cs CPU%",
            "each",
            "vk CPU%",
            "vk us/ev",
            "net",
            "vk ns/del",
            "cli CPU%",
            "other%",
        ],
        rows,
    )
    pinned = any(result.get("cpus", {}).get("pinned") for result in results)
    print("\n" + NOTES.format(pinning=PINNING_SHARED if pinned else PINNING_NONE, noisy=NOISY_OTHER_PCT))
    print("\nratios:", json.dumps(ratios, indent=2))
    print("targets:", json.dumps(targets, indent=2))


# --- main --------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    # SIGTERM (e.g. from `timeout`) cancels the run, so that every server it started is stopped.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    cpus = CpuPlan()
    cpus.pin_self_to_rest()
    planned = scenarios(args)
    if not planned:
        print("no scenario selected")
        return 1
    largest = max(scenario.clients for scenario in planned)
    fd_limit = raise_fd_limit(largest * 2 + 1024)
    if fd_limit < largest + 256:
        print(f"warning: the fd limit is {fd_limit}; scenarios above {fd_limit - 256} clients will fail")
    round_trips = await asyncio.get_running_loop().run_in_executor(
        None, lambda: probe_round_trips(cpus, rounds=20 if args.smoke else 200, pause_s=PROBE_PAUSE_S)
    )
    print("loopback round trip (PING to Valkey, server core -> other core), p50/p99 µs:", json.dumps(round_trips))
    results = []
    latencies: dict[str, list[int]] = {}
    for scenario in planned:
        results.append(await run_until_quiet(scenario, args, cpus, latencies))

    ratios, targets = compare(results, latencies)
    print_results(results, ratios, targets, args.smoke)
    path = write_results(
        "hub",
        {
            "mode": "smoke" if args.smoke else "full",
            "config": {
                "offered_deliveries_per_s": args.offered,
                "paced_deliveries_per_s": args.paced,
                "low_rate_per_s": args.low_rate,
                "events_rate_per_s": args.events_rate,
                "few_clients": FEW_CLIENTS,
                "low_repeats": args.low_repeats,
                "warmup_s": args.warmup_s,
                "window_s": args.window_s,
                "paced_window_s": args.paced_window_s,
                "low_window_s": args.low_window_s,
                "linger_s": args.linger_s,
                "valkey_idle_s": args.valkey_idle_s,
                "cpus": cpus.describe(),
                "pinning": PINNING_SHARED if cpus.enabled else PINNING_NONE,
                "hiredis_installed": hiredis_installed(),
                "fd_limit": fd_limit,
                "quiet_wait_s": args.quiet_wait_s,
                "retries": args.retries,
                "noisy_other_pct": NOISY_OTHER_PCT,
            },
            "loopback_round_trips": round_trips,
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
    parser = benchmark_parser("hub", __doc__ or "")
    parser.add_argument(
        "--offered", type=float, default=DEFAULT_OFFERED_PER_S, help="deliveries/s asked in load scenarios"
    )
    parser.add_argument("--paced", type=float, default=DEFAULT_PACED_PER_S, help="deliveries/s in paced scenarios")
    parser.add_argument("--low-rate", type=float, default=20.0, help="writes per second in low-load scenarios")
    parser.add_argument("--low-repeats", type=int, default=LOW_REPEATS, help="runs of each low-load scenario")
    parser.add_argument("--events-rate", type=float, default=DEFAULT_EVENTS_RATE, help="writes/s in events scenarios")
    parser.add_argument("--window-s", type=float, default=None, help="measured seconds per scenario (default 5)")
    parser.add_argument("--paced-window-s", type=float, default=None, help="... per paced scenario (default 10)")
    parser.add_argument("--low-window-s", type=float, default=None, help="... per low-load scenario (default 15)")
    parser.add_argument("--max-clients", type=int, default=5000, help="skip scenarios with more clients")
    parser.add_argument("--only", default=None, help="run only scenarios whose name contains this")
    parser.add_argument("--no-hiredis-runs", action="store_true", help="skip the hiredis scenarios")
    parser.add_argument(
        "--quiet-wait-s", type=float, default=None, help="wait up to this long for a quiet machine before each scenario"
    )
    parser.add_argument(
        "--retries", type=int, default=None, help="runs again of a scenario the rest of the machine disturbed (2)"
    )
    parser.add_argument("--profile", action="store_true", help="sample the changesync processes with py-spy")
    parser.add_argument(
        "--hub-2-pinning",
        choices=["split", "free"],
        default="split",
        help="hub-2: one core per process (split) or nothing pinned (free)",
    )
    args = parser.parse_args(argv)
    smoke = args.smoke
    args.window_s = args.window_s if args.window_s is not None else (1.0 if smoke else 5.0)
    args.paced_window_s = args.paced_window_s if args.paced_window_s is not None else (1.0 if smoke else 10.0)
    args.low_window_s = args.low_window_s if args.low_window_s is not None else (1.0 if smoke else 15.0)
    args.warmup_s = 0.5 if smoke else 1.0
    args.valkey_idle_s = 0.3 if smoke else 1.0
    if args.quiet_wait_s is None:
        args.quiet_wait_s = 0.0 if smoke else 15.0
    if args.retries is None:
        args.retries = 0 if smoke else 2
    args.linger_s = 0.5 if smoke else 1.0
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
