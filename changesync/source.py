"""The one change stream of the process, and everything else that talks to MongoDB.

PyMongo already retries one getMore and resumes once on resumable errors. This module adds the
outer loop: it reopens the stream from the last resume token after errors PyMongo gives up on,
with bounded exponential backoff and jitter, and starts over (telling clients to resync) when the
position itself is unusable.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bson import ObjectId, Timestamp
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError
from pymongo.read_concern import ReadConcern

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

# Failures in a row at one position after which the change there is deemed undeliverable.
STUCK_AFTER = 3
# What of a change is read again to step over it: enough to name it and resume after it.
ENVELOPE = {"_id": 1, "operationType": 1, "ns": 1, "documentKey": 1, "clusterTime": 1, "wallTime": 1}
# Changes dispatched back to back (from one batch) before the loop lets other tasks run.
YIELD_EVERY = 64

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
    polls_started: int = 0


class Listener(Protocol):
    """What the source tells about the stream (the dispatcher)."""

    def on_start(self, start_time: tuple[int, int] | None, position: Mapping[str, Any] | None) -> None: ...
    def on_change(self, change: Change) -> None: ...
    def on_idle(self, position: Mapping[str, Any] | None, poll_number: int) -> None: ...
    def reset(self, reason: str) -> None: ...
    def skip(self, change: Change) -> None: ...


class ChangeSource:
    """Tails the database with one change stream and tells ``listener`` about every change.

    ``listener.reset(reason)`` is called when clients may have missed changes that cannot be
    replayed (history lost, unusable position): they must reload.
    """

    def __init__(
        self,
        database: AsyncDatabase[dict[str, Any]],
        routes: Sequence[Route],
        listener: Listener,
        *,
        on_restart: Callable[[str], None] | None = None,
        max_await_time_ms: int = 1000,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.database = database
        self.routes = tuple(routes)
        self.pipeline = watch_pipeline(routes)
        self.listener = listener
        self.on_restart = on_restart
        self.max_await_time_ms = max_await_time_ms
        self.state = SourceState()
        self.resume_token: Mapping[str, Any] | None = None
        self._start_after: Mapping[str, Any] | None = None
        self._sleep = sleep
        self._started = asyncio.Event()
        self._start_time: Timestamp | None = None
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
            except OperationFailure as exc:
                if exc.code in POSITION_LOST_CODES:
                    logger.warning("change stream position unusable (code %s); starting from now", exc.code)
                    self.resume_token = None
                    self._start_after = None
                    self._start_time = None
                    self.state.last_error = f"position lost (code {exc.code})"
                    self.listener.reset("history-lost")
                    self._count_restart("position-lost")
                    continue
                self.state.last_error = f"server error {exc.code}"
                logger.error("change stream failed with server error %s: %s", exc.code, exc.details)
                self._count_restart("server-error")
            except ConnectionFailure as exc:
                self.state.last_error = "connection failure"
                logger.warning("change stream connection failed (%s); reopening", type(exc).__name__)
                self._count_restart("connection")
                await self._sleep(backoff.next_delay_s())
                continue
            except PyMongoError as exc:
                self.state.last_error = type(exc).__name__
                logger.error("change stream error %s; reopening", type(exc).__name__)
                self._count_restart("driver-error")
            except Exception:
                # Undecodable data (InvalidBSON) or a bug: the dispatcher already isolates single
                # events, so this is a last line.
                self.state.last_error = "internal error"
                logger.exception("change stream loop failed; reopening from the last position")
                self._count_restart("internal-error")
            finally:
                self.state.open = False
            if self._stuck():
                await self._skip_one()
            await self._sleep(backoff.next_delay_s())

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
            options, _ = await self._position()
            if await self._readable(options):
                return  # it was a passing fault after all: carry on from the same position
            # Only the $match: the failing part may be any stage that looks into the documents.
            async with await self.database.watch(
                [self.pipeline[0], {"$project": ENVELOPE}], max_await_time_ms=self.max_await_time_ms, **options
            ) as stream:
                change = None
                for _ in range(STUCK_AFTER):
                    change = await stream.try_next()
                    if change is not None:
                        break
        except PyMongoError as exc:
            # Not even its envelope can be read: as likely an outage as a bad change, so keep retrying.
            logger.error("cannot read past the failing change either (%s); retrying", type(exc).__name__)
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

    async def _readable(self, options: Mapping[str, Any]) -> bool:
        """Whether the next change after ``options``' position can be read in full now."""
        try:
            async with await self.database.watch(
                self.pipeline,
                full_document_before_change="whenAvailable",
                show_expanded_events=True,
                max_await_time_ms=self.max_await_time_ms,
                **options,
            ) as stream:
                await stream.try_next()
        except PyMongoError:
            return False
        return True

    def _count_restart(self, kind: str) -> None:
        if self.on_restart is not None:
            self.on_restart(kind)

    async def _position(self) -> tuple[dict[str, Any], tuple[int, int] | None]:
        """Where to (re)open the stream, and the start time when it starts afresh."""
        if self._start_after is not None:
            return {"start_after": self._start_after}, None
        if self.resume_token is not None:
            return {"resume_after": self.resume_token}, None
        if self._start_time is None:
            # A fresh start gets an explicit start time, so that "before the stream" has a meaning
            # when a client catches up from history. It is kept until a token replaces it: a stream
            # that fails before its first change must reopen there, not "now".
            reply = await self.database.client.admin.command("ping")
            operation_time = reply.get("operationTime")
            if not isinstance(operation_time, Timestamp):
                return {}, None
            # The start time is inclusive and operationTime is the latest write's time: start just
            # after it, or that write would be published as if it were new.
            self._start_time = Timestamp(operation_time.time, operation_time.inc + 1)
        return {"start_at_operation_time": self._start_time}, (self._start_time.time, self._start_time.inc)

    async def _tail(self, backoff: Backoff) -> None:
        options, start_time = await self._position()
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
            self.listener.on_start(start_time, stream.resume_token)
            self._started.set()
            logger.info("change stream open on %s", self.database.name)
            dispatched_in_a_row = 0
            while stream.alive:
                self.state.polls_started += 1
                poll_number = self.state.polls_started
                change = await stream.try_next()
                self.state.last_poll_monotonic = time.monotonic()
                backoff.reset()
                if change is None:
                    dispatched_in_a_row = 0
                    self.state.lag_s = 0.0
                    self.resume_token = stream.resume_token
                    self.listener.on_idle(self.resume_token, poll_number)
                    continue
                self.state.lag_s = _lag_s(change)
                if change.get("operationType") == "invalidate":
                    self._start_after = change["_id"]
                self.listener.on_change(change)
                self._dispatched += 1
                self.resume_token = stream.resume_token
                dispatched_in_a_row += 1
                if dispatched_in_a_row >= YIELD_EVERY:
                    # A large batch is handed over without I/O; let subscribers drain meanwhile.
                    dispatched_in_a_row = 0
                    await asyncio.sleep(0)
        if self._start_after is not None:
            logger.warning("change stream invalidated; reopening after the invalidate event")

    # --- reads for joining clients ------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def history(self, start_after: Mapping[str, Any], flow_id: str) -> AsyncIterator[Any]:
        """A temporary change stream over one flow's changes since ``start_after``.

        Raises ``OperationFailure`` (codes in ``POSITION_LOST_CODES``) when the position is no
        longer, or never was, in this deployment's history.
        """
        stream = await self.database.watch(
            history_pipeline(self.routes, flow_id),
            full_document_before_change="whenAvailable",
            show_expanded_events=True,
            max_await_time_ms=self.max_await_time_ms,
            start_after=start_after,
        )
        async with stream:
            yield stream

    async def read_flow(
        self, route: Route, flow_id: str, *, limit: int, newest_first: bool
    ) -> tuple[list[dict[str, Any]], tuple[int, int] | None]:
        """The route's current documents of a flow, and the cluster time the read reflects."""
        async with self.database.client.start_session(causal_consistency=True) as session:
            collection = self.database.get_collection(route.collection, read_concern=ReadConcern("majority"))
            cursor = collection.find(
                {route.flow_id_path: {"$in": flow_id_values(flow_id)}}, session=session, limit=limit
            )
            if newest_first:
                cursor = cursor.sort("_id", -1)
            documents = await cursor.to_list()
            operation_time = session.operation_time
        return documents, None if operation_time is None else (operation_time.time, operation_time.inc)

    async def exists(self, collection: str, query: Mapping[str, Any]) -> bool:
        """Whether a document matches ``query`` (authorization lookups)."""
        found = await self.database[collection].find_one(query, projection={"_id": 1})
        return found is not None


def flow_id_values(flow_id: str) -> list[Any]:
    """The stored forms a flow id from a URL may have: the string, an integer, an ObjectId."""
    values: list[Any] = [flow_id]
    if flow_id.lstrip("-").isdigit() and len(flow_id) < 20:
        values.append(int(flow_id))
    if ObjectId.is_valid(flow_id) and len(flow_id) == 24:
        values.append(ObjectId(flow_id))
    return values


def history_pipeline(routes: Sequence[Route], flow_id: str) -> list[dict[str, Any]]:
    """The live pipeline narrowed, on the server, to changes that can concern one flow."""
    values = {"$in": flow_id_values(flow_id)}
    branches: list[dict[str, Any]] = [{"operationType": {"$in": list(RESET_OPERATIONS)}}]
    for route in routes:
        path = route.flow_id_path
        places = (
            ["documentKey._id"]
            if path == "_id"
            else [
                f"fullDocument.{path}",
                f"fullDocumentBeforeChange.{path}",
                f"updateDescription.updatedFields.{path}",
                f"documentKey.{path}",
            ]
        )
        if path == "_id":
            places += ["fullDocument._id"]
        branches.append({"ns.coll": route.collection, "$or": [{place: values} for place in places]})
    return [*watch_pipeline(routes), {"$match": {"$or": branches}}]


def _lag_s(change: Change) -> float:
    wall_time = change.get("wallTime")
    if not isinstance(wall_time, datetime.datetime):
        return 0.0
    if wall_time.tzinfo is None:
        wall_time = wall_time.replace(tzinfo=datetime.UTC)
    return max(0.0, time.time() - wall_time.timestamp())
