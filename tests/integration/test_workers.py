"""``changesync serve --workers N``: N processes on one port with one hub, as a user starts it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import httpx
import pytest

from changesync.check import run_check
from harness import EventStream, ServiceProcess, service_settings

FLOW = "flow-workers"
WORKERS = 3


async def answering_processes(service: ServiceProcess, *, tries: int = 60) -> dict[str, str]:
    """``process`` → ``role`` of the workers that answered ``/readyz`` on fresh connections."""
    seen: dict[str, str] = {}
    for _ in range(tries):
        async with httpx.AsyncClient(timeout=5) as http:  # a new connection, so the kernel picks again
            body = (await http.get(f"{service.base_url}/readyz")).json()
        seen[body["process"]] = body["role"]
        if len(seen) == WORKERS:
            break
    return seen


def pid_of(process: str) -> int:
    return int(process.split(":")[1])


async def start_workers(mongo_backend, database_name, redis_url) -> ServiceProcess:
    report = await run_check(service_settings(mongo_backend.uri, database_name), fix=True)
    assert not report.failed, report.render()
    environ = {"CHANGESYNC_HUB_URL": redis_url, "CHANGESYNC_WORKERS": str(WORKERS)}
    service = ServiceProcess(mongo_backend.uri, database_name, environ=environ)
    await service.start()
    return service


def gone(pid: int) -> bool:
    """Whether the process has exited (a zombie has: only its parent has not collected it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.mark.timeout(60)  # three workers start, one is killed and started again
async def test_workers_share_the_port_one_watches_and_a_dead_one_comes_back(
    mongo_backend, database_name, database, redis_server
):
    """Every worker answers on the one port, one of them watches; a killed worker is started again;
    SIGTERM to the supervisor stops them all."""
    service = await start_workers(mongo_backend, database_name, redis_server.url)
    try:
        seen = await answering_processes(service)
        assert len(seen) == WORKERS, f"only {len(seen)} of {WORKERS} workers answered: {seen}"
        assert sorted(seen.values()) == ["edge"] * (WORKERS - 1) + ["watcher"]
        streams = [EventStream(service.events_url(FLOW, snapshot="false")) for _ in range(6)]
        for stream in streams:
            await stream.__aenter__()
        try:
            await database.flow_logs.insert_one({"flowId": FLOW, "seq": 1})
            for stream in streams:
                assert (await stream.next(10)).data["document"]["seq"] == 1
        finally:
            for stream in streams:
                await stream.__aexit__(None, None, None)
        killed = next(process for process, role in seen.items() if role == "edge")
        os.kill(pid_of(killed), signal.SIGKILL)
        async with asyncio.timeout(20):
            while len(after := await answering_processes(service)) < WORKERS or killed in after:  # noqa: ASYNC110 - polling an endpoint
                await asyncio.sleep(0.2)
        assert sorted(after.values()) == ["edge"] * (WORKERS - 1) + ["watcher"]
        service.signal(signal.SIGTERM)
        assert await service.wait(20) == 0
        assert all([gone(pid_of(process)) for process in after])
    finally:
        await service.stop()


@pytest.mark.timeout(30)
async def test_workers_stop_when_their_supervisor_is_killed(mongo_backend, database_name, redis_server):
    """kill -9 of the supervisor leaves no worker behind (nor the port taken)."""
    service = await start_workers(mongo_backend, database_name, redis_server.url)
    pids = [pid_of(process) for process in await answering_processes(service)]
    assert len(pids) == WORKERS
    await service.stop()  # SIGKILL
    async with asyncio.timeout(15):
        while not all([gone(pid) for pid in pids]):  # noqa: ASYNC110 - polling processes
            await asyncio.sleep(0.1)


def test_more_than_one_worker_needs_a_hub():
    """Without hub.url, each worker would hold its own change stream: refused, with the reason."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("CHANGESYNC_")}
    result = subprocess.run(
        [sys.executable, "-m", "changesync", "serve", "--workers", "2"],
        env={**environ, "CHANGESYNC_AUTH_MODE": "none"},
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 2
    assert "workers" in result.stderr and "hub.url" in result.stderr, result.stderr
