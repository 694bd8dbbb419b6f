"""Whether this process can serve, for ``/readyz`` and for joins: one kind of answer per mode.

A single process (no hub) is ready when its change stream is open, polling and not lagging. In hub
mode every process is ready when it is connected to Redis and can reach MongoDB (edges read
snapshots and catch up from the oplog), whether or not it holds the watcher's lease; when it does,
its change stream counts too. ``/readyz`` says which role the process has.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from .errors import SourceError
from .hub.edge import RedisHub
from .hub.leader import Leader
from .mongo import Database
from .producing.watcher import CHECK_HINT, Watcher
from .settings import Settings

# Readiness also fails when the stream has not polled for this many await periods.
STALL_FACTOR = 5
MINIMUM_STALL_S = 5.0
# How often an edge checks that MongoDB answers.
PROBE_INTERVAL_S = 5.0


class Status(Protocol):
    def refusal(self) -> str | None:
        """Why a client cannot join now (a 503), or ``None``."""
        ...

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether the process is ready, and the body of ``/readyz``."""
        ...

    @property
    def lag_s(self) -> float: ...


def _stream_checks(watcher: Watcher, settings: Settings) -> dict[str, bool]:
    state = watcher.state
    stall_s = max(MINIMUM_STALL_S, STALL_FACTOR * settings.stream.max_await_time_ms / 1000)
    return {
        "changeStreamOpen": state.open,
        "polling": state.open and time.monotonic() - state.last_poll_monotonic < stall_s,
        "lagUnderBound": state.lag_s < settings.stream.ready_max_lag_s,
    }


class LocalStatus:
    """One process that watches and serves."""

    def __init__(self, watcher: Watcher, settings: Settings, *, target: str) -> None:
        self.watcher = watcher
        self.settings = settings
        self.target = target

    def refusal(self) -> str | None:
        return None if self.watcher.started else "change stream not open yet"

    @property
    def lag_s(self) -> float:
        return self.watcher.state.lag_s

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks = _stream_checks(self.watcher, self.settings)
        ready = all(checks.values())
        body: dict[str, Any] = {"status": "ready" if ready else "not-ready", "checks": checks, "lagSeconds": self.lag_s}
        if self.watcher.state.last_error:
            body["lastError"] = self.watcher.state.last_error
        if not ready:
            body["mongodb"] = self.target
            body["hint"] = CHECK_HINT
        return ready, body


class DatabaseProbe:
    """Pings MongoDB now and then, for processes that hold no change stream of their own."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.reachable = False
        self.last_error: str | None = None

    async def run(self) -> None:
        while True:
            try:
                await self.database.latest_operation_time()
            except SourceError as exc:
                self.reachable, self.last_error = False, exc.cause
            else:
                self.reachable, self.last_error = True, None
            await asyncio.sleep(PROBE_INTERVAL_S)


class HubStatus:
    """A process of a hub deployment: an edge, and the watcher while it holds the lease."""

    def __init__(self, hub: RedisHub, leader: Leader, probe: DatabaseProbe, settings: Settings, *, target: str) -> None:
        self.hub = hub
        self.leader = leader
        self.probe = probe
        self.settings = settings
        self.target = target

    def refusal(self) -> str | None:
        return None if self.hub.ready else "the hub is not connected to Redis yet"

    @property
    def lag_s(self) -> float:
        watcher = self.leader.watcher
        return watcher.state.lag_s if watcher is not None else 0.0

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks = {"redisConnected": self.hub.ready, "mongodbReachable": self.probe.reachable}
        watcher = self.leader.watcher
        if watcher is not None:
            checks.update(_stream_checks(watcher, self.settings))
        ready = all(checks.values())
        body: dict[str, Any] = {
            "status": "ready" if ready else "not-ready",
            "role": self.leader.role,
            "process": self.leader.owner,
            "checks": checks,
            "lagSeconds": self.lag_s,
        }
        errors = [error for error in (self.hub.last_error, self.probe.last_error) if error]
        if watcher is not None and watcher.state.last_error:
            errors.append(watcher.state.last_error)
        if errors:
            body["lastError"] = "; ".join(errors)
        if not ready:
            body["mongodb"] = self.target
            body["hint"] = CHECK_HINT
        return ready, body
