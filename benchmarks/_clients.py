"""Lightweight SSE clients: raw asyncio protocols in a separate process (one per benchmark run).

Each client sends one ``GET`` and then only looks at the bytes: it counts frames (blank lines), and for
every ``"t0":`` in the data it reads the writer's ``time.time_ns()`` stamp (19 digits, possibly
quoted: changesync turns integers beyond 2^53 into strings) and records ``now - t0``. No SSE parser,
no JSON decoding, no HTTP library: the clients must cost far less than the server they measure.

The process connects to ``config["port"]``, or round-robin to the servers of ``config["ports"]``.
Protocol with the parent, over a ``multiprocessing`` pipe:
``("ready", connect_stats)`` once every client got its response headers (or failed); then the parent
sends ``("window", start_ns, end_ns, linger_s)``; deliveries that arrive inside the window are
counted; ``linger_s`` after its end the process sends ``("result", stats)`` and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import time
from multiprocessing.connection import Connection
from typing import Any

T0_MARK = b'"t0":'
T0_DIGITS = 19  # time.time_ns() has 19 digits until the year 2286
# Frames end with a blank line: changesync writes "\n" line ends, sse-starlette's encoder "\r\n".
FRAME_ENDS = {"lf": b"\n\n", "crlf": b"\r\n\r\n"}
HEADER_END = b"\r\n\r\n"
RESYNC_MARK = b"event: RESYNC"
SKIPPED_MARK = b'"skipped":'
HEARTBEAT_MARK = b": heartbeat"
# Latency samples kept at most (memory bound); beyond it every other sample is kept, and so on.
MAX_SAMPLES = 4_000_000


class Stats:
    __slots__ = (
        "bytes_in_window",
        "closed_early",
        "deliveries",
        "frames",
        "heartbeats",
        "latencies",
        "resyncs",
        "sample_every",
        "sample_tick",
        "skipped",
        "window_end",
        "window_start",
    )

    def __init__(self) -> None:
        self.window_start = 1 << 62
        self.window_end = 1 << 62
        self.deliveries = 0
        self.frames = 0
        self.heartbeats = 0
        self.bytes_in_window = 0
        self.skipped = 0
        self.resyncs = 0
        self.closed_early = 0
        self.latencies: list[int] = []
        self.sample_every = 1
        self.sample_tick = 0


class SseReader(asyncio.Protocol):
    __slots__ = (
        "_buffer",
        "_headers_done",
        "done",
        "per_client",
        "request",
        "separator",
        "stats",
        "status",
        "transport",
    )

    def __init__(self, request: bytes, stats: Stats, done: asyncio.Future[int], separator: bytes) -> None:
        self.request = request
        self.separator = separator
        self.stats = stats
        self.done = done
        self._buffer = b""
        self._headers_done = False
        self.status = 0
        self.per_client = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        buffer = self._buffer + data if self._buffer else data
        if not self._headers_done:
            end = buffer.find(HEADER_END)
            if end < 0:
                self._buffer = buffer
                return
            self._headers_done = True
            line = buffer[: buffer.find(b"\r\n")]
            parts = line.split(b" ", 2)
            self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            if not self.done.done():
                self.done.set_result(self.status)
            buffer = buffer[end + 4 :]
        separator = self.separator
        last = buffer.rfind(separator)
        if last < 0:
            self._buffer = buffer
            return
        self._buffer = buffer[last + len(separator) :]
        stats = self.stats
        if now < stats.window_start or now > stats.window_end:
            return
        stats.bytes_in_window += last + len(separator)
        stats.frames += buffer.count(separator, 0, last + len(separator))
        index = buffer.find(T0_MARK, 0, last)
        while index >= 0:
            start = index + len(T0_MARK)
            while buffer[start] in (0x20, 0x22):  # a space (json.dumps) or a quote (a string)
                start += 1
            stamp = buffer[start : start + T0_DIGITS]
            stats.deliveries += 1
            self.per_client += 1
            stats.sample_tick += 1
            if stats.sample_tick >= stats.sample_every:
                stats.sample_tick = 0
                stats.latencies.append(now - int(stamp))
                if len(stats.latencies) >= MAX_SAMPLES:
                    stats.latencies = stats.latencies[::2]
                    stats.sample_every *= 2
            index = buffer.find(T0_MARK, start + T0_DIGITS, last)
        if HEARTBEAT_MARK in buffer:
            stats.heartbeats += buffer.count(HEARTBEAT_MARK, 0, last)
        if RESYNC_MARK in buffer:
            stats.resyncs += buffer.count(RESYNC_MARK, 0, last)
        if SKIPPED_MARK in buffer:
            stats.skipped += buffer.count(SKIPPED_MARK, 0, last)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(-1)
        self.stats.closed_early += 1


async def _run(config: dict[str, Any], conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    stats = Stats()
    readers: list[SseReader] = []
    ports_of: dict[SseReader, int] = {}
    semaphore = asyncio.Semaphore(config.get("connect_concurrency", 100))
    failures: dict[str, int] = {}
    started = time.perf_counter()
    separator = FRAME_ENDS[config.get("line_end", "lf")]

    async def connect(path: str, port: int) -> None:
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()
        async with semaphore:
            done: asyncio.Future[int] = loop.create_future()
            try:
                _, reader = await asyncio.wait_for(
                    loop.create_connection(lambda: SseReader(request, stats, done, separator), "127.0.0.1", port),
                    timeout=30,
                )
                status = await asyncio.wait_for(done, timeout=30)
            except (OSError, TimeoutError) as exc:
                failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
                return
            if status != 200:
                failures[f"status {status}"] = failures.get(f"status {status}", 0) + 1
                if reader.transport is not None:
                    reader.transport.close()
                return
            readers.append(reader)
            ports_of[reader] = port

    # Client i connects to ports[i % len(ports)]: several servers share the clients evenly.
    ports = config.get("ports") or [config["port"]]
    await asyncio.gather(*(connect(path, ports[index % len(ports)]) for index, path in enumerate(config["paths"])))
    stats.closed_early = 0
    conn.send(
        (
            "ready",
            {
                "connected": len(readers),
                "failed": sum(failures.values()),
                "failures": failures,
                "connect_s": round(time.perf_counter() - started, 2),
            },
        )
    )
    message = await loop.run_in_executor(None, conn.recv)
    if message[0] != "window":
        return
    _, stats.window_start, stats.window_end, linger_s = message
    until = (stats.window_end - time.time_ns()) / 1e9 + linger_s
    await asyncio.sleep(max(0.0, until))
    per_client = sorted(reader.per_client for reader in readers)
    per_port: dict[int, int] = {}
    for reader, port in ports_of.items():
        per_port[port] = per_port.get(port, 0) + reader.per_client
    latencies = stats.latencies
    latencies.sort()
    conn.send(
        (
            "result",
            {
                "deliveries": stats.deliveries,
                "frames": stats.frames,
                "heartbeats": stats.heartbeats,
                "bytes": stats.bytes_in_window,
                "skipped_events": stats.skipped,
                "resyncs": stats.resyncs,
                "closed_early": stats.closed_early,
                "sample_every": stats.sample_every,
                "latencies_ns": _thin(latencies),
                "per_client_min": per_client[0] if per_client else 0,
                "per_client_max": per_client[-1] if per_client else 0,
                "clients_with_nothing": sum(1 for count in per_client if count == 0),
                "deliveries_per_port": per_port,
            },
        )
    )
    for reader in readers:
        if reader.transport is not None:
            reader.transport.close()
    await asyncio.sleep(0.1)


def _thin(sorted_values: list[int], keep: int = 200_000) -> list[int]:
    """At most ``keep`` evenly spaced values of a sorted list (percentiles survive, the pipe stays small)."""
    if len(sorted_values) <= keep:
        return sorted_values
    step = len(sorted_values) / keep
    return [sorted_values[int(index * step)] for index in range(keep)] + [sorted_values[-1]]


def client_main(config: dict[str, Any], conn: Connection) -> None:
    """Entry point of the client process (``multiprocessing`` spawn target)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = len(config["paths"]) + 256
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    if config.get("cpus"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, set(config["cpus"]))
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError, EOFError):
        asyncio.run(_run(config, conn))
