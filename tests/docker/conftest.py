"""Fixtures for the container files: docker-compose.yml, docker/Dockerfile and the package they run.

Nothing here needs Docker: the files are parsed and checked against the code they deploy.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"


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
