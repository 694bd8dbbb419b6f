"""An in-memory stand-in for a MongoDB replica set, for the service's parts to run on without a server.

``FakeDatabase`` has the methods of ``changesync.mongo.Database`` that the service calls: change
streams over its own oplog (they block up to ``max_await_time_ms`` when idle, as a getMore does),
majority reads of a flow's documents, and access lookups. Writes (``insert``, ``update``,
``replace``, ``delete``, ``drop``) append change events as MongoDB would send them, pre-images
included. It is not a query engine: streams return every change after their position (the history
path filters by flow itself), and ``read_flow`` matches the route's flow id path and field equalities only.

Imported by tests as ``fakes`` (``tests/`` is on ``sys.path``). The integration tests run the same
parts on a real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from bson import Timestamp

from changesync.delivering.log_tail import value_at
from changesync.errors import HistoryLostError, SourceError, UnknownPositionError
from changesync.queries import flow_id_values
from filters import Route

START_SECONDS = 1_800_000_000


def token(index: int) -> dict[str, str]:
    """The resume token of the oplog's change number ``index`` (1-based); 0 is "before the first"."""
    return {"_data": f"82{index:08X}"}


def index_of(resume_token: Mapping[str, Any]) -> int:
    data = resume_token.get("_data")
    if not isinstance(data, str) or len(data) != 10 or not data.startswith("82"):
        raise UnknownPositionError("not a token of this deployment", code=280)
    return int(data[2:], 16)


class FakeChangeStream:
    def __init__(self, database: FakeDatabase, after: int, max_await_time_ms: int) -> None:
        self._database = database
        self._next = after + 1
        self._wait_s = max_await_time_ms / 1000
        self.alive = True
        self.resume_token: dict[str, str] | None = token(after)

    async def try_next(self) -> dict[str, Any] | None:
        database = self._database
        if database.failures:
            raise database.failures.pop(0)
        if self._next > len(database.oplog):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._wait_s):
                    await database.wait_for_change(self._next)
        if database.failures:
            raise database.failures.pop(0)
        if self._next > len(database.oplog):
            self.resume_token = token(len(database.oplog))
            return None
        change = copy.deepcopy(database.oplog[self._next - 1])
        self.resume_token = token(self._next)
        self._next += 1
        return change

    async def close(self) -> None:
        self.alive = False

    async def __aenter__(self) -> FakeChangeStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class FakeDatabase:
    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.collections: dict[str, dict[Any, dict[str, Any]]] = {}
        self.oplog: list[dict[str, Any]] = []
        self.lost_before = 0
        """Positions before this oplog index have left the oplog (``HistoryLostError``)."""
        self.failures: list[SourceError] = []
        """Raised, in turn, by the next change stream openings or reads."""
        self.streams_opened = 0
        self.after_reads: dict[str, list[Callable[[], object]]] = {}
        """By collection, run in turn right after its next reads (``read_flow``): writes that land after a read."""
        self._changed: asyncio.Event | None = None

    # --- writes ------------------------------------------------------------------------------------

    def insert(self, collection: str, document: dict[str, Any]) -> dict[str, Any]:
        self.collections.setdefault(collection, {})[document["_id"]] = copy.deepcopy(document)
        return self._append("insert", collection, document["_id"], fullDocument=copy.deepcopy(document))

    def update(
        self, collection: str, document_id: Any, set: Mapping[str, Any] | None = None, unset: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """``$set`` (top-level or dotted paths into objects) and ``$unset`` of top-level fields."""
        stored = self.collections[collection][document_id]
        before = copy.deepcopy(stored)
        for path, value in (set or {}).items():
            *parents, last = path.split(".")
            node = stored
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = copy.deepcopy(value)
        for field in unset:
            stored.pop(field, None)
        description = {
            "updatedFields": copy.deepcopy(dict(set or {})),
            "removedFields": list(unset),
            "truncatedArrays": [],
            "disambiguatedPaths": {},
        }
        return self._append(
            "update", collection, document_id, updateDescription=description, fullDocumentBeforeChange=before
        )

    def replace(self, collection: str, document: dict[str, Any]) -> dict[str, Any]:
        before = self.collections[collection][document["_id"]]
        self.collections[collection][document["_id"]] = copy.deepcopy(document)
        return self._append(
            "replace",
            collection,
            document["_id"],
            fullDocument=copy.deepcopy(document),
            fullDocumentBeforeChange=copy.deepcopy(before),
        )

    def delete(self, collection: str, document_id: Any) -> dict[str, Any]:
        before = self.collections[collection].pop(document_id)
        return self._append("delete", collection, document_id, fullDocumentBeforeChange=before)

    def drop(self, collection: str) -> dict[str, Any]:
        self.collections.pop(collection, None)
        return self._append("drop", collection, None)

    def _append(self, operation: str, collection: str, document_id: Any, **fields: Any) -> dict[str, Any]:
        index = len(self.oplog) + 1
        change: dict[str, Any] = {
            "_id": token(index),
            "operationType": operation,
            "clusterTime": Timestamp(START_SECONDS, index),
            "wallTime": datetime.datetime.now(datetime.UTC).replace(tzinfo=None),
            "ns": {"db": self.name, "coll": collection},
            **({"documentKey": {"_id": document_id}} if document_id is not None else {}),
            **fields,
        }
        self.oplog.append(change)
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        return change

    async def wait_for_change(self, index: int) -> None:
        while len(self.oplog) < index:
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()

    # --- what the service reads --------------------------------------------------------------------

    async def open_stream(
        self,
        pipeline: Any,
        *,
        max_await_time_ms: int,
        start_after: Mapping[str, Any] | None = None,
        resume_after: Mapping[str, Any] | None = None,
        start_at: tuple[int, int] | None = None,
        images: bool = True,
    ) -> FakeChangeStream:
        if self.failures:
            raise self.failures.pop(0)
        self.streams_opened += 1
        position = start_after if start_after is not None else resume_after
        if position is not None:
            after = index_of(position)
            if after > len(self.oplog):
                raise UnknownPositionError("the position is ahead of the oplog", code=280)
        elif start_at is not None:
            after = start_at[1] - 1 if start_at[0] == START_SECONDS else len(self.oplog)
        else:
            after = len(self.oplog)
        if after < self.lost_before:
            raise HistoryLostError("the resume point is no longer in the oplog", code=286)
        return FakeChangeStream(self, after, max_await_time_ms)

    @contextlib.asynccontextmanager
    async def stream(self, pipeline: Any, **options: Any) -> AsyncIterator[FakeChangeStream]:
        async with await self.open_stream(pipeline, **options) as stream:
            yield stream

    async def latest_operation_time(self) -> tuple[int, int] | None:
        return (START_SECONDS, len(self.oplog))

    async def read_flow(
        self,
        route: Route,
        flow_id: str,
        *,
        limit: int,
        newest_first: bool,
        where: Mapping[str, Any] | None = None,
    ) -> tuple[list[dict[str, Any]], tuple[int, int] | None]:
        values = flow_id_values(flow_id)
        documents = []
        for document in self.collections.get(route.collection, {}).values():
            if value_at(document, route.flow_id_path) in values and all(
                value_at(document, path) == wanted for path, wanted in (where or {}).items()
            ):
                documents.append(copy.deepcopy(document))
        if newest_first:
            documents.sort(key=lambda document: document["_id"], reverse=True)
        read_time = (START_SECONDS, len(self.oplog))
        if self.after_reads.get(route.collection):
            self.after_reads[route.collection].pop(0)()
        return documents[:limit], read_time

    async def exists(self, collection: str, query: Mapping[str, Any]) -> bool:
        return True

    async def image_settings(self) -> dict[str, bool]:
        return {name: True for name in self.collections}

    async def close(self) -> None:
        pass
