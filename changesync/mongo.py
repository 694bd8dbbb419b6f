"""Everything that talks to MongoDB, and the one place where PyMongo's errors become ours.

``mapped_errors()`` turns every PyMongo and BSON error into a ``changesync.errors.SourceError``,
as httpx maps httpcore's errors in one place. Every call into the driver below goes through it, so
no module above this one imports PyMongo to handle an error.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, Self

from bson import Timestamp
from bson.errors import BSONError
from pymongo import AsyncMongoClient
from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError
from pymongo.read_concern import ReadConcern

from filters import Route

from .errors import (
    HistoryLostError,
    NotAReplicaSetError,
    ServerError,
    SourceError,
    SourceUnavailableError,
    TokenRejectedError,
    UndecodableError,
    UnknownPositionError,
)
from .queries import flow_query

ClusterTime = tuple[int, int]
"""A cluster time as ``(seconds, increment)``: ordered like the server's Timestamps."""
Change = Mapping[str, Any]
"""A change event as the driver decodes it (BSON values)."""
Client = AsyncMongoClient[dict[str, Any]]
RawDatabase = AsyncDatabase[dict[str, Any]]

# Server error codes, by what they mean to us.
HISTORY_LOST_CODES = frozenset(
    {
        136,  # CappedPositionLost: the open cursor fell off the oplog
        286,  # ChangeStreamHistoryLost: the resume point is no longer in the oplog
    }
)
UNKNOWN_POSITION_CODES = frozenset(
    {
        260,  # InvalidResumeToken
        280,  # ChangeStreamFatalError: token not found, or the pipeline changed _id
    }
)
TOKEN_REJECTED_CODES = frozenset({9, 14})  # FailedToParse, TypeMismatch: not a token at all
NOT_A_REPLICA_SET_CODE = 40573  # "The $changeStream stage is only supported on replica sets"
# PyMongo's connection errors append the client's timeouts and the whole topology to the cause.
_DRIVER_SUFFIX = re.compile(r" \(configured timeouts:.*$|, Timeout: .*$", re.DOTALL)


def cause_of(exc: BaseException) -> str:
    """The first line of an exception's message, without PyMongo's topology description."""
    text = _DRIVER_SUFFIX.sub("", str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def mapped_errors() -> Iterator[None]:
    """Raise ``SourceError`` subclasses for the PyMongo and BSON errors raised in the block."""
    try:
        yield
    except OperationFailure as exc:
        code, details = exc.code, exc.details
        cause = f"server error {code}: {cause_of(exc)}" if code is not None else cause_of(exc)
        if code in HISTORY_LOST_CODES:
            raise HistoryLostError(cause, code=code, details=details) from exc
        if code in UNKNOWN_POSITION_CODES:
            raise UnknownPositionError(cause, code=code, details=details) from exc
        if code in TOKEN_REJECTED_CODES:
            raise TokenRejectedError(cause, code=code, details=details) from exc
        if code == NOT_A_REPLICA_SET_CODE:
            raise NotAReplicaSetError(
                "a standalone server: change streams need a replica set (a single node is enough) or mongos",
                code=code,
                details=details,
            ) from exc
        raise ServerError(cause, code=code, details=details) from exc
    except ConnectionFailure as exc:
        raise SourceUnavailableError(cause_of(exc)) from exc
    except PyMongoError as exc:
        raise SourceError(f"{type(exc).__name__}: {cause_of(exc)}") from exc
    except BSONError as exc:
        raise UndecodableError(f"{type(exc).__name__}: {cause_of(exc)}") from exc


def open_client(uri: str, *, server_selection_timeout_ms: int = 10_000) -> Client:
    """A client whose decoding never raises on odd data: out-of-range dates stay ``DatetimeMS``,
    invalid UTF-8 is replaced."""
    with mapped_errors():
        return AsyncMongoClient(
            uri,
            appname="changesync",
            datetime_conversion="DATETIME_AUTO",
            unicode_decode_error_handler="replace",
            serverSelectionTimeoutMS=server_selection_timeout_ms,
        )


class ChangeStream:
    """An open change stream; ``try_next`` raises ``SourceError``s only."""

    __slots__ = ("_stream",)

    def __init__(self, stream: AsyncChangeStream[dict[str, Any]]) -> None:
        self._stream = stream

    @property
    def alive(self) -> bool:
        return self._stream.alive

    @property
    def resume_token(self) -> Mapping[str, Any] | None:
        """Where the stream would resume: after the latest change, or the latest empty batch."""
        return self._stream.resume_token

    async def try_next(self) -> Change | None:
        """The next change, or ``None`` when the server had none within ``max_await_time_ms``."""
        with mapped_errors():
            return await self._stream.try_next()

    async def close(self) -> None:
        with mapped_errors():
            await self._stream.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class Database:
    """One database of a deployment, as the service uses it."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name
        self._database: RawDatabase = client[name]

    async def close(self) -> None:
        with mapped_errors():
            await self.client.close()

    @property
    def raw(self) -> RawDatabase:
        """The PyMongo database, for writers (the demo) that do not handle errors."""
        return self._database

    # --- change streams -------------------------------------------------------------------

    async def open_stream(
        self,
        pipeline: Sequence[Mapping[str, Any]],
        *,
        max_await_time_ms: int,
        start_after: Mapping[str, Any] | None = None,
        resume_after: Mapping[str, Any] | None = None,
        start_at: ClusterTime | None = None,
        images: bool = True,
    ) -> ChangeStream:
        """A database-level change stream. Pre-images only (``whenAvailable``), when ``images``: the
        filter pipeline rebuilds each post-image from the pre-image and the update description."""
        options: dict[str, Any] = {}
        if start_after is not None:
            options["start_after"] = start_after
        if resume_after is not None:
            options["resume_after"] = resume_after
        if start_at is not None:
            options["start_at_operation_time"] = Timestamp(*start_at)
        if images:
            options["full_document_before_change"] = "whenAvailable"
        with mapped_errors():
            stream = await self._database.watch(
                list(pipeline), show_expanded_events=True, max_await_time_ms=max_await_time_ms, **options
            )
        return ChangeStream(stream)

    @contextlib.asynccontextmanager
    async def stream(self, pipeline: Sequence[Mapping[str, Any]], **options: Any) -> AsyncIterator[ChangeStream]:
        """``open_stream`` as a context manager that closes the stream."""
        async with await self.open_stream(pipeline, **options) as stream:
            yield stream

    async def latest_operation_time(self) -> ClusterTime | None:
        """The cluster time of the latest write the server knows of (``None`` when it reports none)."""
        with mapped_errors():
            reply = await self.client.admin.command("ping")
        operation_time = reply.get("operationTime")
        return (operation_time.time, operation_time.inc) if isinstance(operation_time, Timestamp) else None

    # --- reads ----------------------------------------------------------------------------

    async def read_flow(
        self,
        route: Route,
        flow_id: str,
        *,
        limit: int,
        newest_first: bool,
        where: Mapping[str, Any] | None = None,
    ) -> tuple[list[dict[str, Any]], ClusterTime | None]:
        """The route's current documents of a flow (majority read concern), narrowed by ``where``
        (field equalities), and the cluster time the read reflects."""
        query = flow_query(route, flow_id)
        if where:
            # $eq: a stored value that is a document with $-names is compared, never run as operators.
            query = {"$and": [query, *({path: {"$eq": value}} for path, value in where.items())]}
        with mapped_errors():
            async with self.client.start_session(causal_consistency=True) as session:
                collection = self._database.get_collection(route.collection, read_concern=ReadConcern("majority"))
                cursor = collection.find(query, session=session, limit=limit)
                if newest_first:
                    cursor = cursor.sort("_id", -1)
                documents = await cursor.to_list()
                operation_time = session.operation_time
        return documents, None if operation_time is None else (operation_time.time, operation_time.inc)

    async def exists(self, collection: str, query: Mapping[str, Any]) -> bool:
        """Whether a document matches ``query`` (authorization lookups)."""
        with mapped_errors():
            found = await self._database[collection].find_one(query, projection={"_id": 1})
        return found is not None

    # --- the deployment, for ``changesync check`` -------------------------------------------

    async def hello(self) -> dict[str, Any]:
        with mapped_errors():
            reply: dict[str, Any] = await self.client.admin.command("hello")
        return reply

    async def server_version(self) -> str:
        with mapped_errors():
            reply = await self.client.admin.command("buildInfo")
        return str(reply.get("version", "?"))

    async def image_settings(self) -> dict[str, bool]:
        """Every existing collection, and whether its pre- and post-images are on."""
        with mapped_errors():
            infos = [info async for info in await self._database.list_collections()]
        return {
            info["name"]: bool(info.get("options", {}).get("changeStreamPreAndPostImages", {}).get("enabled", False))
            for info in infos
        }

    async def enable_images(self, collection: str, *, exists: bool) -> None:
        """Turn pre- and post-images on for ``collection``, creating it when it does not exist."""
        with mapped_errors():
            if exists:
                await self._database.command("collMod", collection, changeStreamPreAndPostImages={"enabled": True})
            else:
                await self._database.create_collection(collection, changeStreamPreAndPostImages={"enabled": True})


def open_database(uri: str, name: str, *, server_selection_timeout_ms: int = 10_000) -> Database:
    return Database(open_client(uri, server_selection_timeout_ms=server_selection_timeout_ms), name)


async def unreachable_cause(uri: str, *, timeout_ms: int = 2_000) -> str | None:
    """Why the deployment at ``uri`` cannot be reached (a quick ``ping``), or ``None`` when it answers."""
    try:
        client = open_client(uri, server_selection_timeout_ms=timeout_ms)
    except SourceError as exc:
        return exc.cause
    try:
        with mapped_errors():
            await client.admin.command("ping")
    except SourceUnavailableError as exc:
        return exc.cause
    except SourceError:
        return None  # it answered: what it answered is the watcher's to report
    finally:
        await client.close()
    return None
