"""Source stage: the one live change stream of a deployment, and the loop that keeps it open.

PyMongo already retries one getMore and resumes once on resumable errors. This module adds the
outer loop: it reopens the stream from the last resume token after errors PyMongo gives up on,
with bounded exponential backoff and jitter, and starts over (telling clients to resync) when the
position itself is unusable. It hands every change to its ``Listener`` (the producer).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from filters import Route

from ..errors import PositionLostError, ServerError, SourceError, SourceUnavailableError, UndecodableError
from ..mongo import Change, ClusterTime, Database
from ..queries import watch_pipeline

logger = logging.getLogger(__name__)

# Failures in a row at one position after which the change there is deemed undeliverable.
STUCK_AFTER = 3
# What of a change is read again to step over it: enough to name it and resume after it.
ENVELOPE = {"_id": 1, "operationType": 1, "ns": 1, "documentKey": 1, "clusterTime": 1, "wallTime": 1}
# Changes dispatched back to back (from one batch) before the loop lets other tasks run.
YIELD_EVERY = 64
# A failure whose cause has not changed is logged again at most this often.
REPEAT_LOG_INTERVAL_S = 60.0
CHECK_HINT = "run `changesync check` to diagnose the deployment"


class Backoff:
    """Exponential backoff with full jitter, capped."""

    def __init__(self, *, initial_s: float = 0.1, maximum_s: float = 30.0) -> None:
        self.initial_s = initial_s
        self.maximum_s = maximum_s
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next_delay_s(self) -> float:
        ceiling = min(self.maximum_s, self.initial_s * 2**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)


@dataclass(slots=True)
class SourceState:
    """What readiness and metrics need to know about the stream."""

    open: bool = False
    last_poll_monotonic: float = 0.0
    last_error: str | None = None
    lag_s: float = 0.0


class Listener(Protocol):
    """What the watcher tells about the stream (the producer)."""

    def on_start(self, start_time: ClusterTime | None, token: Mapping[str, Any] | None) -> None: ...
    def on_change(self, change: Change) -> None: ...
    def on_idle(self, token: Mapping[str, Any] | None) -> None: ...
    def reset(self, reason: str) -> None: ...
    def skip(self, change: Change) -> None: ...
    async def drain(self) -> None: ...


class FailureLog:
    """Says what is wrong once, when it starts or changes, then reminds at most every ``interval_s``."""

    def __init__(self, target: str, *, interval_s: float = REPEAT_LOG_INTERVAL_S) -> None:
        self.target = target
        self.interval_s = interval_s
        self._cause: str | None = None
        self._logged_at = 0.0
        self._repeats = 0

    def failed(self, level: int, cause: str, action: str) -> None:
        now = time.monotonic()
        if cause != self._cause:
            self._cause, self._logged_at, self._repeats = cause, now, 0
            logger.log(level, "change stream on %s: %s; %s (%s)", self.target, cause, action, CHECK_HINT)
            return
        self._repeats += 1
        if now - self._logged_at >= self.interval_s:
            self._logged_at = now
            logger.log(
                level, "change stream on %s still failing after %d more attempts: %s", self.target, self._repeats, cause
            )

    def recovered(self) -> None:
        if self._cause is not None:
            logger.warning("change stream on %s is open again (it had failed: %s)", self.target, self._cause)
        self._cause = None


class Watcher:
    """Tails the database with one change stream and tells ``listener`` about every change.

    ``listener.reset(reason)`` is called when clients may have missed changes that cannot be
    replayed (history lost, unusable position): they must reload.
    """

    def __init__(
        self,
        database: Database,
        routes: Sequence[Route],
        listener: Listener,
        *,
        target: str = "",
        on_restart: Callable[[str], None] | None = None,
        max_await_time_ms: int = 1000,
        resume_after: Mapping[str, Any] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``resume_after``: the position to resume from (a hub's stored one); else the stream starts now."""
        self.database = database
        self.pipeline = watch_pipeline(routes)
        self.listener = listener
        self.on_restart = on_restart
        self.max_await_time_ms = max_await_time_ms
        self.state = SourceState()
        self.resume_token: Mapping[str, Any] | None = resume_after
        self._failures = FailureLog(target or f"database {database.name!r}")
        self._start_after: Mapping[str, Any] | None = None
        self._sleep = sleep
        self._started = asyncio.Event()
        self._start_time: ClusterTime | None = None
        self._lost_history = False
        """Changes were lost: clients are told (``reset``) when the stream is open again."""
        self._dispatched = 0
        self._dispatched_at_failure = 0
        self._failures_here = 0

    @property
    def started(self) -> bool:
        return self._started.is_set()

    async def wait_started(self) -> None:
        """Until the first stream is open: a write after this returns is seen."""
        await self._started.wait()

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self._tail(backoff)
                continue
            except PositionLostError as exc:
                self._failed(logging.WARNING, f"position unusable ({exc.cause})", "starting from now")
                self.resume_token = None
                self._start_after = None
                self._start_time = None
                # Told once the new stream is open: a client that writes as soon as it hears of the
                # gap must not write before the new stream's start, where nothing would see it.
                self._lost_history = True
                self._count_restart("position-lost")
                continue
            except ServerError as exc:
                self._failed(logging.ERROR, exc.cause, "reopening")
                self._count_restart("server-error")
            except SourceUnavailableError as exc:
                self._failed(logging.WARNING, f"cannot reach the server ({exc.cause})", "retrying")
                self._count_restart("connection")
                await self._sleep(backoff.next_delay_s())
                continue
            except UndecodableError as exc:
                self._failed(logging.ERROR, exc.cause, "reopening from the last position")
                self._count_restart("undecodable")
            except SourceError as exc:
                self._failed(logging.ERROR, exc.cause, "reopening")
                self._count_restart("driver-error")
            except Exception:
                # A bug: the producer already isolates single events, so this is a last line.
                self.state.last_error = "internal error"
                logger.exception("change stream loop failed; reopening from the last position")
                self._count_restart("internal-error")
            finally:
                self.state.open = False
            if self._stuck():
                await self._skip_one()
            await self._sleep(backoff.next_delay_s())

    def unreachable(self, cause: str) -> None:
        """Report, before the stream's first attempt fails, that the server cannot be reached."""
        self._failed(logging.ERROR, f"cannot reach the server ({cause})", "serving anyway and retrying")

    def _failed(self, level: int, cause: str, action: str) -> None:
        self.state.last_error = cause
        self._failures.failed(level, cause, action)

    def _stuck(self) -> bool:
        """Whether the stream failed ``STUCK_AFTER`` times in a row without delivering a change."""
        if self._dispatched != self._dispatched_at_failure:
            self._dispatched_at_failure, self._failures_here = self._dispatched, 0
        self._failures_here += 1
        return self._failures_here >= STUCK_AFTER

    async def _skip_one(self) -> None:
        """Step over the one change the server cannot deliver (too large, too deep, undecodable).

        It is read again with only its envelope; clients are told to resync, since it is lost to
        them. A bounded, explicit gap instead of a stream stuck for good.
        """
        try:
            position = await self._position()
            if await self._readable(position):
                return  # it was a passing fault after all: carry on from the same position
            # Only the $match: the failing part may be any stage that looks into the documents.
            async with self.database.stream(
                [self.pipeline[0], {"$project": ENVELOPE}],
                max_await_time_ms=self.max_await_time_ms,
                images=False,
                **position,
            ) as stream:
                change = None
                for _ in range(STUCK_AFTER):
                    change = await stream.try_next()
                    if change is not None:
                        break
        except SourceError as exc:
            # Not even its envelope can be read: as likely an outage as a bad change, so keep retrying.
            logger.error("cannot read past the failing change either (%s); retrying", exc.cause)
            return
        if change is None:
            return
        ns = change.get("ns") or {}
        logger.error(
            "skipped a %s change on %s that the stream cannot deliver; clients must resync",
            change.get("operationType"),
            ns.get("coll"),
        )
        self.resume_token = change["_id"]
        self._start_after = None
        self._failures_here = 0
        self.listener.skip(change)

    async def _readable(self, position: Mapping[str, Any]) -> bool:
        """Whether the next change after ``position`` can be read in full now."""
        try:
            async with self.database.stream(
                self.pipeline, max_await_time_ms=self.max_await_time_ms, **position
            ) as stream:
                await stream.try_next()
        except SourceError:
            return False
        return True

    def _count_restart(self, kind: str) -> None:
        if self.on_restart is not None:
            self.on_restart(kind)

    async def _position(self) -> dict[str, Any]:
        """Where to (re)open the stream: ``start_after``, ``resume_after`` or ``start_at``."""
        if self._start_after is not None:
            return {"start_after": self._start_after}
        if self.resume_token is not None:
            return {"resume_after": self.resume_token}
        if self._start_time is None:
            # A fresh start gets an explicit start time, so that "before the stream" has a meaning
            # when a client catches up from history. It is kept until a token replaces it: a stream
            # that fails before its first change must reopen there, not "now".
            operation_time = await self.database.latest_operation_time()
            if operation_time is None:
                return {}
            # The start time is inclusive and operationTime is the latest write's time: start just
            # after it, or that write would be published as if it were new.
            self._start_time = (operation_time[0], operation_time[1] + 1)
        return {"start_at": self._start_time}

    async def _tail(self, backoff: Backoff) -> None:
        position = await self._position()
        stream = await self.database.open_stream(self.pipeline, max_await_time_ms=self.max_await_time_ms, **position)
        async with stream:
            self._start_after = None
            self.state.open = True
            self.state.last_poll_monotonic = time.monotonic()
            self.resume_token = stream.resume_token
            self.listener.on_start(position.get("start_at"), stream.resume_token)
            if self._lost_history:
                self._lost_history = False
                self.listener.reset("history-lost")
            self._started.set()
            logger.info("change stream open on %s", self.database.name)
            dispatched_in_a_row = 0
            while stream.alive:
                change = await stream.try_next()
                self.state.last_poll_monotonic = time.monotonic()
                if self.state.last_error is not None:
                    self.state.last_error = None
                    self._failures.recovered()
                backoff.reset()
                if change is None:
                    dispatched_in_a_row = 0
                    self.state.lag_s = 0.0
                    self.resume_token = stream.resume_token
                    self.listener.on_idle(self.resume_token)
                    continue
                self.state.lag_s = _lag_s(change)
                if change.get("operationType") == "invalidate":
                    self._start_after = change["_id"]
                self.listener.on_change(change)
                self._dispatched += 1
                self.resume_token = stream.resume_token
                dispatched_in_a_row += 1
                if dispatched_in_a_row >= YIELD_EVERY:
                    # A large batch is handed over without I/O: let the hub catch up meanwhile.
                    dispatched_in_a_row = 0
                    await self.listener.drain()
        if self._start_after is not None:
            logger.warning("change stream invalidated; reopening after the invalidate event")


def _lag_s(change: Change) -> float:
    wall_time = change.get("wallTime")
    if not isinstance(wall_time, datetime.datetime):
        return 0.0
    if wall_time.tzinfo is None:
        wall_time = wall_time.replace(tzinfo=datetime.UTC)
    return max(0.0, time.time() - wall_time.timestamp())
