"""Integration-only fixtures: ``node_writer`` writes through the official Node.js driver (node/writer.mjs)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from bson import json_util

from backends import NodeWrite

NODE_DIR = Path(__file__).parent / "node"
# A cold `npm ci` of the driver took ~2 s here; allow slow mirrors, then skip rather than hang.
NPM_CI_TIMEOUT_S = 120
# Bound on one writer.mjs run: start Node, connect (writer.mjs allows 10 s), write, close.
NODE_WRITE_TIMEOUT_S = 30


class NodeWriterError(RuntimeError):
    """writer.mjs failed or timed out; carries its exit code (None on timeout) and stderr."""

    def __init__(self, message: str, *, returncode: int | None, stderr: str) -> None:
        super().__init__(f"{message}: {stderr}" if stderr else message)
        self.returncode = returncode
        self.stderr = stderr


def _cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "changesync-tests"


def _install_writer(npm: str) -> Path:
    """writer.mjs in ``<cache>/node-<lockfile hash>/`` next to its node_modules; raises pytest.skip.Exception."""
    lock_hash = hashlib.sha256((NODE_DIR / "package-lock.json").read_bytes()).hexdigest()[:16]
    target = _cache_home() / f"node-{lock_hash}"
    if not (target / "node_modules").is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        # Install into a staging directory and rename it into place, so a concurrent session never
        # sees a half-installed tree; if another session wins the rename, its tree is as good as ours.
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent))
        try:
            for name in ("package.json", "package-lock.json"):
                shutil.copy2(NODE_DIR / name, staging / name)
            try:
                result = subprocess.run(
                    [npm, "ci", "--no-audit", "--no-fund"],
                    cwd=staging,
                    capture_output=True,
                    text=True,
                    timeout=NPM_CI_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                pytest.skip(f"npm ci did not finish within {NPM_CI_TIMEOUT_S} s")
            if result.returncode != 0:
                pytest.skip(f"npm ci failed with exit code {result.returncode}: {_npm_error_summary(result.stderr)}")
            try:
                staging.rename(target)
            except OSError:
                if not (target / "node_modules").is_dir():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    writer = target / "writer.mjs"
    source = (NODE_DIR / "writer.mjs").read_bytes()
    if not writer.is_file() or writer.read_bytes() != source:
        # Written beside and renamed over, so a concurrent session never runs half a file.
        partial = writer.with_name(f"writer.mjs.{os.getpid()}")
        partial.write_bytes(source)
        partial.replace(writer)
    return writer


def _npm_error_summary(stderr: str) -> str:
    """npm's first error line (usually its error code) and last line (usually where the full log is)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return "no output"
    first = next((line for line in lines if line.startswith(("npm error", "npm ERR!"))), lines[0])
    return first if first == lines[-1] else f"{first} ... {lines[-1]}"


@pytest.fixture(scope="session")
def node_writer() -> NodeWrite:
    """Return ``await node_write(uri, db, ops) -> list[dict]``, one result per op (Extended JSON decoded).

    ``ops`` are dicts such as ``{"op": "insertOne", "collection": "c", "document": {...}}``; BSON values
    (ObjectId, datetime, Int64, ...) survive the trip. Raises NodeWriterError when writer.mjs fails.
    The first session after a lockfile change runs ``npm ci`` into the user cache directory.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node_writer needs node and npm on PATH")
    writer = _install_writer(npm)

    async def node_write(uri: str, db: str, ops: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        payload = json_util.dumps(list(ops), json_options=json_util.CANONICAL_JSON_OPTIONS).encode()
        process = await asyncio.create_subprocess_exec(
            node,
            str(writer),
            uri,
            db,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=writer.parent,
        )
        try:
            async with asyncio.timeout(NODE_WRITE_TIMEOUT_S):
                stdout, stderr = await process.communicate(payload)
        except TimeoutError as exc:
            raise NodeWriterError(
                f"writer.mjs did not finish within {NODE_WRITE_TIMEOUT_S} s", returncode=None, stderr=""
            ) from exc
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        if process.returncode != 0:
            raise NodeWriterError(
                f"writer.mjs exited with code {process.returncode}",
                returncode=process.returncode,
                stderr=stderr.decode(errors="replace").strip(),
            )
        return [json_util.loads(line) for line in stdout.decode().splitlines() if line]

    return node_write
