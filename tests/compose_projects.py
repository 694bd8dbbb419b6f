"""A docker-compose.yml project under a name of its own, driven through the Compose CLI, for the
live compose tests (they skip where no Docker engine answers). Imported as ``compose_projects``."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

COMPOSE_FILE = Path(__file__).resolve().parents[1] / "docker-compose.yml"
COMMAND_TIMEOUT_S = 60.0


class ComposeCommandError(RuntimeError):
    """A docker compose command failed; carries its arguments, exit code and stderr."""

    def __init__(self, command: tuple[str, ...], returncode: int | None, stderr: str) -> None:
        super().__init__(f"docker compose {' '.join(command)} exited with {returncode}: {stderr.strip()[-2000:]}")
        self.command = command
        self.returncode = returncode
        self.stderr = stderr


@dataclass(frozen=True, slots=True)
class ComposeProject:
    """``profiles`` of docker-compose.yml under the project ``name``. Commands run with this process's
    environment plus ``environ``, and the default stack's ``CHANGESYNC_AUTH_MODE=none`` (the tests'
    clients send no token)."""

    cli: tuple[str, ...]
    name: str
    profiles: tuple[str, ...]
    environ: Mapping[str, str] = field(default_factory=dict)

    def argv(self, *command: str) -> list[str]:
        profiles = [word for profile in self.profiles for word in ("--profile", profile)]
        return [*self.cli, "--file", str(COMPOSE_FILE), "--project-name", self.name, *profiles, *command]

    def environment(self) -> dict[str, str]:
        return {**os.environ, "CHANGESYNC_AUTH_MODE": "none", **self.environ}

    def run(self, *command: str, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
        """Run a command to its end, outside the event loop (fixtures); its stdout."""
        result = subprocess.run(
            self.argv(*command), capture_output=True, text=True, timeout=timeout_s, env=self.environment()
        )
        if result.returncode != 0:
            raise ComposeCommandError(command, result.returncode, result.stderr)
        return result.stdout

    async def arun(self, *command: str, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
        """Run a command to its end, in the event loop; its stdout."""
        process = await asyncio.create_subprocess_exec(
            *self.argv(*command),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.environment(),
        )
        try:
            async with asyncio.timeout(timeout_s):
                stdout, stderr = await process.communicate()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        if process.returncode != 0:
            raise ComposeCommandError(command, process.returncode, stderr.decode(errors="replace"))
        return stdout.decode()


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
