"""The embedded default database for ``changesync demo``: SecantusDB, run as a child process.

SecantusDB is a MongoDB-compatible single-node replica set (GPL-2.0). It is only ever started as a
separate program, never imported: install it with the ``demo`` extra.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

from .errors import EmbeddedServerError

EXECUTABLE = "secantusd-py"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
INSTALL_HINT = "pip install 'changesync[demo]'"


def find_executable() -> str | None:
    beside_python = Path(sys.executable).with_name(EXECUTABLE)
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which(EXECUTABLE)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _die_with_parent() -> None:
    """In the child: ask Linux to send SIGTERM when the parent dies. A demo killed by a signal
    (uvicorn re-raises SIGTERM after its graceful shutdown) must not leave the server behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedServer:
    """``with EmbeddedServer() as server: server.uri`` — an in-memory server on a free port."""

    def __init__(
        self, *, port: int | None = None, storage_path: str = ":memory:", extra_args: tuple[str, ...] = ()
    ) -> None:
        executable = find_executable()
        if executable is None:
            raise EmbeddedServerError(f"{EXECUTABLE} is not installed; run: {INSTALL_HINT}")
        self.executable = executable
        self.port = port or free_port()
        self.storage_path = storage_path
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None
        self.log: IO[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self, *, timeout_s: float = 20.0) -> None:
        command = [
            self.executable,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--storage-path",
            self.storage_path,
        ]
        # A file, not a pipe: nobody reads the server's log while it runs, and a full pipe would block it.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server; closed in stop()
        self.process = subprocess.Popen(
            [*command, *self.extra_args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            # Out of the terminal's process group: Ctrl-C reaches the demo, which shuts down while its
            # database still answers, then stops the server itself.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedServerError(f"{EXECUTABLE} exited with {self.process.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise EmbeddedServerError(f"{EXECUTABLE} did not accept connections within {timeout_s:g} s")

    def log_tail(self, limit: int = 2000) -> str:
        if self.log is None:
            return ""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-limit:]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log is not None:
            self.log.close()
            self.log = None

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
