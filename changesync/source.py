"""The one change stream of the process, and everything else that talks to MongoDB.

PyMongo already retries one getMore and resumes once on resumable errors. This module adds the
outer loop: it reopens the stream from the last resume token after errors PyMongo gives up on,
with bounded exponential backoff and jitter, and starts over (telling clients to resync) when the
position itself is unusable.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from filters import Route

logger = logging.getLogger(__name__)

DATA_OPERATIONS = ("insert", "update", "replace", "delete")
# Events that end (part of) what clients have seen: their flows must reload.
RESET_OPERATIONS = ("drop", "rename", "dropDatabase", "invalidate")
# Server error codes after which the stored position cannot be used again.
POSITION_LOST_CODES = {
    136,  # CappedPositionLost: the open cursor fell off the oplog
    260,  # InvalidResumeToken
    280,  # ChangeStreamFatalError: token not found, or pipeline changed _id
    286,  # ChangeStreamHistoryLost: the resume point is no longer in the oplog
}

Change = Mapping[str, Any]
Client = AsyncMongoClient[dict[str, Any]]


def open_client(uri: str, *, server_selection_timeout_ms: int = 10_000) -> Client:
    """A client whose decoding never raises on odd data: out-of-range dates stay ``DatetimeMS``,
    invalid UTF-8 is replaced."""
    return AsyncMongoClient(
        uri,
        appname="changesync",
        datetime_conversion="DATETIME_AUTO",
        unicode_decode_error_handler="replace",
        serverSelectionTimeoutMS=server_selection_timeout_ms,
    )


def server_denied_paths(routes: Sequence[Route]) -> list[str]:
    """Field paths removed by the server: plain deny patterns that every route shares."""
    if not routes:
        return []
    common = set(routes[0].deny)
    for route in routes[1:]:
        common &= set(route.deny)
    plain = sorted(p for p in common if "*" not in p and not any(part.isdigit() for part in p.split(".")))
    return [
        f"{prefix}.{path}"
        for path in plain
        for prefix in ("fullDocument", "fullDocumentBeforeChange", "updateDescription.updatedFields")
    ]


def watch_pipeline(routes: Sequence[Route]) -> list[dict[str, Any]]:
    collections = [route.collection for route in routes]
    match = {
        "$match": {
            "$or": [
                {"ns.coll": {"$in": collections}, "operationType": {"$in": [*DATA_OPERATIONS, "drop", "rename"]}},
                {"to.coll": {"$in": collections}, "operationType": "rename"},
                {"operationType": {"$in": ["dropDatabase", "invalidate"]}},
            ]
        }
    }
    unset = server_denied_paths(routes)
    return [match, {"$unset": unset}] if unset else [match]


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


class ChangeSource:
    """Tails the database with one change stream and hands every change to ``on_change``.

    ``on_reset(reason)`` is called when clients may have missed changes that cannot be replayed
    (history lost, invalidated stream, dropped database): they must reload.
    """

    def __init__(
        self,
        database: AsyncDatabase[dict[str, Any]],
        routes: Sequence[Route],
        *,
        on_change: Callable[[Change], None],
        on_reset: Callable[[str], None],
        on_restart: Callable[[str], None] | None = None,
        max_await_time_ms: int = 1000,
        resume_after: Mapping[str, Any] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.database = database
        self.pipeline = watch_pipeline(routes)
        self.on_change = on_change
        self.on_reset = on_reset
        self.on_restart = on_restart
        self.max_await_time_ms = max_await_time_ms
        self.state = SourceState()
        self.resume_token: Mapping[str, Any] | None = resume_after
        self._start_after: Mapping[str, Any] | None = None
        self._sleep = sleep
        self._started = asyncio.Event()

    async def wait_started(self) -> None:
        """Until the first stream is open: a write after this returns is seen."""
        await self._started.wait()

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self._tail(backoff)
            except OperationFailure as exc:
                if exc.code in POSITION_LOST_CODES:
                    logger.warning("change stream position unusable (code %s); starting from now", exc.code)
                    self.resume_token = None
                    self._start_after = None
                    self.state.last_error = f"position lost (code {exc.code})"
                    self.on_reset("history-lost")
                else:
                    self.state.last_error = f"server error {exc.code}"
                    logger.error("change stream failed with server error %s: %s", exc.code, exc.details)
                    await self._sleep(backoff.next_delay_s())
                self._count_restart("position-lost" if exc.code in POSITION_LOST_CODES else "server-error")
            except ConnectionFailure as exc:
                self.state.last_error = "connection failure"
                logger.warning("change stream connection failed (%s); reopening", type(exc).__name__)
                self._count_restart("connection")
                await self._sleep(backoff.next_delay_s())
            except PyMongoError as exc:
                self.state.last_error = type(exc).__name__
                logger.error("change stream error %s; reopening", type(exc).__name__)
                self._count_restart("driver-error")
                await self._sleep(backoff.next_delay_s())
            except Exception:
                # A bug in event handling must not end the service's only stream.
                self.state.last_error = "internal error"
                logger.exception("change stream handler failed; reopening from the last position")
                self._count_restart("internal-error")
                await self._sleep(backoff.next_delay_s())
            finally:
                self.state.open = False

    def _count_restart(self, kind: str) -> None:
        if self.on_restart is not None:
            self.on_restart(kind)

    async def _tail(self, backoff: Backoff) -> None:
        options: dict[str, Any] = {}
        if self._start_after is not None:
            options["start_after"] = self._start_after
        elif self.resume_token is not None:
            options["resume_after"] = self.resume_token
        # Pre-images only: the filter pipeline rebuilds each post-image from the pre-image and the
        # update description. That is exact at the event's point in time, costs half the bytes, and
        # does not depend on how a server computes post-images.
        stream = await self.database.watch(
            self.pipeline,
            full_document_before_change="whenAvailable",
            show_expanded_events=True,
            max_await_time_ms=self.max_await_time_ms,
            **options,
        )
        async with stream:
            self._start_after = None
            self.state.open = True
            self.state.last_error = None
            self.state.last_poll_monotonic = time.monotonic()
            self.resume_token = stream.resume_token
            self._started.set()
            logger.info("change stream open on %s", self.database.name)
            while stream.alive:
                change = await stream.try_next()
                self.state.last_poll_monotonic = time.monotonic()
                backoff.reset()
                if change is None:
                    self.state.lag_s = 0.0
                    self.resume_token = stream.resume_token
                    continue
                self.state.lag_s = _lag_s(change)
                if change.get("operationType") == "invalidate":
                    self._start_after = change["_id"]
                self.on_change(change)
                self.resume_token = stream.resume_token
        if self._start_after is not None:
            logger.warning("change stream invalidated; reopening after the invalidate event")


def _lag_s(change: Change) -> float:
    wall_time = change.get("wallTime")
    if not isinstance(wall_time, datetime.datetime):
        return 0.0
    if wall_time.tzinfo is None:
        wall_time = wall_time.replace(tzinfo=datetime.UTC)
    return max(0.0, time.time() - wall_time.timestamp())
