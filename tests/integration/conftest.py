"""Integration-only fixtures: ``node_writer`` writes through the official Node.js driver (node/writer.mjs)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import npm_cache
import pytest
from bson import json_util

from backends import NodeWrite

NODE_DIR = Path(__file__).parent / "node"
# Bound on one writer.mjs run: start Node, connect (writer.mjs allows 10 s), write, close.
NODE_WRITE_TIMEOUT_S = 30


class NodeWriterError(RuntimeError):
    """writer.mjs failed or timed out; carries its exit code (None on timeout) and stderr."""

    def __init__(self, message: str, *, returncode: int | None, stderr: str) -> None:
        super().__init__(f"{message}: {stderr}" if stderr else message)
        self.returncode = returncode
        self.stderr = stderr


def _install_writer(npm: str) -> Path:
    """writer.mjs in the cached install of its package, next to its node_modules; may skip."""
    target = npm_cache.install(NODE_DIR, prefix="node", npm=npm)
    writer = target / "writer.mjs"
    source = (NODE_DIR / "writer.mjs").read_bytes()
    if not writer.is_file() or writer.read_bytes() != source:
        # Written beside and renamed over, so a concurrent session never runs half a file.
        partial = writer.with_name(f"writer.mjs.{os.getpid()}")
        partial.write_bytes(source)
        partial.replace(writer)
    return writer


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
