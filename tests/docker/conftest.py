"""Fixtures for the container files: docker-compose.yml, docker/Dockerfile and the package they run.

Most fixtures need no Docker: the files are parsed and checked against the code they deploy.
``compose_cli`` and ``docker_engine`` skip, with the reason, where the Compose CLI or a Docker
engine is missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import backends

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
# Bound on `docker compose version`, which answers at once where the plugin is installed.
COMPOSE_PROBE_TIMEOUT_S = 30


@dataclass(frozen=True, slots=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    arguments: str
    line: int
    stage: int

    def exec_form(self) -> list[str]:
        """The JSON (exec) form of CMD / ENTRYPOINT / RUN; fails on the shell form."""
        value = json.loads(self.arguments)
        assert isinstance(value, list), f"line {self.line}: {self.keyword} is not in exec form"
        return value


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order, with the index of the build stage (``FROM``) each belongs to."""
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    stage = -1
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments and blank lines, also inside a continued instruction
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        keyword, _, arguments = " ".join(parts).partition(" ")
        parts = []
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, arguments.strip(), start, stage))
    assert not parts, "the Dockerfile ends inside a continued instruction"
    return instructions


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="session")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def image_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services that run the changesync image (built from docker/Dockerfile)."""
    found = {name: service for name, service in services.items() if "build" in service}
    assert found, "no service builds the changesync image"
    return found


@pytest.fixture(scope="session")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="session")
def final_stage(dockerfile: list[Instruction]) -> list[Instruction]:
    last = max(instruction.stage for instruction in dockerfile)
    return [instruction for instruction in dockerfile if instruction.stage == last]


@pytest.fixture(scope="session")
def pyproject() -> dict[str, Any]:
    with (REPO_ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


@pytest.fixture(scope="session")
def cli_help() -> Callable[..., str]:
    """Run ``python -m changesync SUBCOMMAND... --help`` and return what it prints."""

    def run(*subcommand: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "changesync", *subcommand, "--help"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return result.stdout

    return run


@pytest.fixture(scope="session")
def app_paths() -> set[str]:
    """The route paths of the ASGI app; ``create_app`` builds it without connecting to MongoDB."""
    from changesync.app import create_app
    from changesync.settings import load_settings

    app = create_app(load_settings(environ={"CHANGESYNC_AUTH_MODE": "none"}))
    return {route.path for route in app.routes}  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def compose_cli() -> tuple[str, ...]:
    """``docker compose`` as the start of a command line; skips where the Compose CLI is missing."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker CLI is not on PATH")
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=COMPOSE_PROBE_TIMEOUT_S
    )
    if probe.returncode != 0:
        said = (probe.stderr or probe.stdout).strip().splitlines()
        pytest.skip(f"docker compose is not available ({said[0] if said else f'exit code {probe.returncode}'})")
    return (docker, "compose")


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Skips, with the reason, unless a Docker engine answers a ping."""
    reason = backends.docker_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
