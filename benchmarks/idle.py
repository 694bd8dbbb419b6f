"""Idle SSE connections: memory per connection and the CPU that heartbeats cost.

    python -m benchmarks.idle [--smoke] [--clients 10000]

changesync (uvicorn, its own process, pinned to core 0) with SecantusDB and N idle clients (raw
asyncio readers in a separate process on the other core), spread over N/10 flows, no writes. Two
server lifetimes, identical but for ``stream.heartbeat_interval_s``: a short one (1 s, so that a
window sees many heartbeat rounds) and the default (15 s). For each:

- RSS per connection: (RSS with N clients connected and settled - RSS before any client) / N;
- CPU (/proc/<pid>/stat) over a window before any client connected (the idle service: change-stream
  polls, housekeeping) and over a window with N clients.

Heartbeats at 15 s are reported twice: extrapolated from the short interval (CPU per heartbeat round
x 1/15 s: many rounds, a precise per-heartbeat cost) and measured directly at 15 s (everything the
idle connections cost, over a 30 s window: two rounds, an upper bound).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import signal
import time
from typing import Any

from changesync.embedded import EmbeddedServer, free_port

from ._clients import client_main
from ._common import (
    RESULTS_DIR,
    ChildServer,
    CpuMeter,
    CpuPlan,
    benchmark_parser,
    http_get,
    print_table,
    raise_fd_limit,
    rss_bytes,
    start_profile,
    summarize_profile,
    wait_for_quiet,
    write_results,
)
from .fanout import receive

DEFAULT_HEARTBEAT_S = 15.0
TARGET_KB_PER_CONNECTION = 30.0
TARGET_HEARTBEAT_CORE_PCT = 2.0
CLIENTS_PER_FLOW = 10


async def run_interval(
    clients: int,
    heartbeat_s: float,
    *,
    base_s: float,
    window_s: float,
    settle_s: float,
    cpus: CpuPlan,
    profile: bool = False,
    memory: bool = False,
) -> dict[str, Any]:
    port = free_port()
    database = f"bench_idle_{int(time.time())}"
    db_server = EmbeddedServer()
    server: ChildServer | None = None
    process: multiprocessing.process.BaseProcess | None = None
    result: dict[str, Any] = {"heartbeat_interval_s": heartbeat_s, "clients_requested": clients}
    try:
        db_server.start()
        assert db_server.process is not None
        cpus.pin_rest(db_server.process.pid)
        arguments = ["changesync", "--mongodb-uri", db_server.uri, "--database", database, "--port", str(port)]
        arguments += ["--heartbeat-s", str(heartbeat_s), "--max-connections", str(clients + 1000)]
        if memory:
            arguments.append("--tracemalloc")
        server = ChildServer("benchmarks.serve", arguments, port=port, ready_path="/readyz", cpus=cpus)
        await server.start()
        await asyncio.sleep(settle_s)

        rss_before = rss_bytes(server.pid)
        meter = CpuMeter({"server": server.pid, "database": db_server.process.pid})
        meter.start()
        await asyncio.sleep(base_s)
        base = meter.stop()

        flows = max(1, clients // CLIENTS_PER_FLOW)
        paths = [f"/flows/flow-{index % flows}/events?snapshot=false" for index in range(clients)]
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        config = {"port": port, "paths": paths, "cpus": sorted(cpus.rest), "connect_concurrency": 200}
        process = context.Process(target=client_main, args=(config, child), daemon=True)
        process.start()
        assert process.pid is not None
        kind, connect = await receive(parent, 300)
        assert kind == "ready", kind
        connected = connect["connected"]
        await asyncio.sleep(settle_s)
        rss_after = rss_bytes(server.pid)

        start_ns = time.time_ns() + int(0.2e9)
        end_ns = start_ns + int(window_s * 1e9)
        parent.send(("window", start_ns, end_ns, 0.5))
        await asyncio.sleep(0.2)
        meter = CpuMeter({"server": server.pid, "database": db_server.process.pid, "clients": process.pid})
        meter.start()
        profile_path = RESULTS_DIR / "profiles" / f"idle_{clients}_heartbeat_{heartbeat_s:g}s.txt"
        profiler = start_profile(server.pid, window_s, profile_path) if profile else None
        await asyncio.sleep(window_s)
        loaded = meter.stop()
        if profiler is not None:
            await asyncio.get_running_loop().run_in_executor(None, profiler.wait)
            result["profile"] = {"file": str(profile_path), **summarize_profile(profile_path)}
        if memory:
            result["memory_top"] = json.loads((await http_get(port, "/_bench/memory", timeout_s=120))[1])
        kind, stats = await receive(parent, 60)
        assert kind == "result", kind
        rss_end = rss_bytes(server.pid)

        result.update(
            connected=connected,
            connect_failures=connect["failures"],
            connect_s=connect["connect_s"],
            flows=flows,
            rss_mb_before=round(rss_before / 1e6, 1),
            rss_mb_connected=round(rss_after / 1e6, 1),
            rss_mb_end=round(rss_end / 1e6, 1),
            rss_kb_per_connection=round((rss_after - rss_before) / 1e3 / max(1, connected), 1),
            base_window_s=base_s,
            window_s=window_s,
            server_cpu_pct_before_clients=round(base["server"] * 100, 3),
            server_cpu_pct_with_clients=round(loaded["server"] * 100, 3),
            server_cpu_pct_for_connections=round((loaded["server"] - base["server"]) * 100, 3),
            database_cpu_pct=round(loaded["database"] * 100, 2),
            other_cpu_pct=round(loaded["other"] * 100, 1),
            client_cpu_pct=round(loaded["clients"] * 100, 2),
            heartbeats_received=stats["heartbeats"],
            heartbeat_rounds_per_s=round(stats["heartbeats"] / max(1, connected) / window_s, 3),
            closed_early=stats["closed_early"],
        )
        return result
    finally:
        if process is not None:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
        if server is not None:
            server.stop()
        db_server.stop()


def derive(short: dict[str, Any], default: dict[str, Any]) -> dict[str, Any]:
    """Memory per connection, and heartbeat CPU two ways.

    - measured: the server's CPU with N clients minus before any client, at the default 15 s interval
      (everything the idle connections cost, heartbeats included: an upper bound for heartbeats);
    - extrapolated: the same at the short interval, divided by the heartbeat rounds the clients saw
      (the housekeeping timer ticks every 0.2 s, so a 1 s interval gives about 0.9 rounds/s), per
      heartbeat, times N / 15 s. Two rounds in a 30 s window make the first noisy, many rounds the second.
    """
    connections = short["connected"]
    rounds_short = short["heartbeat_rounds_per_s"] or 1 / short["heartbeat_interval_s"]
    round_cpu_s = max(0.0, short["server_cpu_pct_for_connections"] / 100 / rounds_short)
    extrapolated_pct = 100 * round_cpu_s / DEFAULT_HEARTBEAT_S
    measured_pct = default["server_cpu_pct_for_connections"]
    kb = [run["rss_kb_per_connection"] for run in (short, default)]
    return {
        "connections": connections,
        "cpu_seconds_per_heartbeat_round": round(round_cpu_s, 4),
        "cpu_microseconds_per_heartbeat": round(1e6 * round_cpu_s / max(1, connections), 1),
        "heartbeat_core_pct_at_15s_extrapolated": round(extrapolated_pct, 3),
        "connections_core_pct_at_15s_measured": measured_pct,
        "rss_kb_per_connection": round(sum(kb) / len(kb), 1),
        "target_rss_met": max(kb) <= TARGET_KB_PER_CONNECTION,
        "target_heartbeat_met": max(extrapolated_pct, measured_pct) < TARGET_HEARTBEAT_CORE_PCT,
    }


async def run(args: argparse.Namespace) -> int:
    # SIGTERM (e.g. from `timeout`) cancels the run, so that every server it started is stopped.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    cpus = CpuPlan()
    cpus.pin_self_to_rest()
    fd_limit = raise_fd_limit(args.clients + 1024)
    clients = min(args.clients, fd_limit - 256)
    if clients < args.clients:
        print(f"the fd limit is {fd_limit}: measuring {clients} connections instead of {args.clients}")
    if args.smoke:
        intervals = [(0.5, 0.5, 1.0), (1.0, 0.5, 1.0)]  # (heartbeat, base window, window)
        settle_s = 0.3
    else:
        intervals = [(1.0, 5.0, 10.0), (DEFAULT_HEARTBEAT_S, 5.0, 30.0)]
        settle_s = 3.0
    runs = []
    for heartbeat_s, base_s, window_s in intervals:
        background = None if args.smoke else await wait_for_quiet(max_wait_s=30)
        print(f"running {clients} idle clients, heartbeat every {heartbeat_s:g} s ...", flush=True)
        runs.append(
            await run_interval(
                clients,
                heartbeat_s,
                base_s=base_s,
                window_s=window_s,
                settle_s=settle_s,
                cpus=cpus,
                profile=args.profile and heartbeat_s == intervals[0][0],
                memory=args.memory and heartbeat_s == intervals[0][0],
            )
        )
        runs[-1]["background_cpu_pct_before"] = None if background is None else round(background * 100, 1)
    derived = derive(runs[0], runs[1])
    rows = [
        [
            run["heartbeat_interval_s"],
            run["connected"],
            run["rss_mb_before"],
            run["rss_mb_connected"],
            run["rss_kb_per_connection"],
            run["server_cpu_pct_before_clients"],
            run["server_cpu_pct_with_clients"],
            run["heartbeat_rounds_per_s"],
            run["client_cpu_pct"],
        ]
        for run in runs
    ]
    print_table(
        "idle connections" + (" [SMOKE: figures meaningless]" if args.smoke else ""),
        [
            "heartbeat s",
            "connected",
            "RSS MB before",
            "RSS MB after",
            "KB/conn",
            "CPU% idle",
            "CPU% conns",
            "rounds/s",
            "client CPU%",
        ],
        rows,
    )
    print(
        f"\nper connection: {derived['rss_kb_per_connection']} KB RSS (target <= {TARGET_KB_PER_CONNECTION:g} KB: "
        f"{'met' if derived['target_rss_met'] else 'NOT met'})"
    )
    verdict = "met" if derived["target_heartbeat_met"] else "NOT met"
    print(
        f"heartbeats at 15 s for {derived['connections']:,} connections: "
        f"{derived['heartbeat_core_pct_at_15s_extrapolated']}% of a core extrapolated from the short interval "
        f"({derived['cpu_microseconds_per_heartbeat']} us per heartbeat); "
        f"{derived['connections_core_pct_at_15s_measured']}% measured at 15 s for everything the idle connections "
        f"cost (target < {TARGET_HEARTBEAT_CORE_PCT:g}%: {verdict})"
    )
    noisy = [run["heartbeat_interval_s"] for run in runs if (run.get("other_cpu_pct") or 0) > 15]
    if noisy:
        print(f"warning: the rest of the machine used > 15% of a core during the runs at {noisy} s: figures are noisy")
    path = write_results(
        "idle",
        {
            "mode": "smoke" if args.smoke else "full",
            "config": {"clients": clients, "fd_limit": fd_limit, "cpus": cpus.describe(), "settle_s": settle_s},
            "runs": runs,
            "derived": derived,
            "targets": {
                "rss_kb_per_connection": TARGET_KB_PER_CONNECTION,
                "heartbeat_core_pct_at_15s": TARGET_HEARTBEAT_CORE_PCT,
            },
        },
        file_name=args.results_name,
        directory=args.results_dir,
    )
    print(f"\nwrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser("idle", __doc__ or "")
    parser.add_argument("--clients", type=int, default=None, help="idle connections (default 10,000; smoke 50)")
    parser.add_argument("--profile", action="store_true", help="sample the server with py-spy (short interval)")
    parser.add_argument(
        "--memory", action="store_true", help="trace allocations in the server (tracemalloc; slows it down)"
    )
    args = parser.parse_args(argv)
    if args.clients is None:
        args.clients = 50 if args.smoke else 10_000
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run(args))
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
