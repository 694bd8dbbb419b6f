"""The test backend answers on a real socket: replica set, change streams, pre-images, failpoints, isolation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import datetime
from typing import Any

import pytest
from bson import Int64, ObjectId
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.asynchronous.database import AsyncDatabase

from backends import Backend, NodeWrite, SecantusdbFactory, sync_client

# func_only: the session fixtures bound their own start-up (server, `npm ci`, container), which
# lands in whichever test runs first, and a first `docker pull` of mongo:8.0 can take minutes.
pytestmark = pytest.mark.timeout(30, func_only=True)

# How long a test waits for one change event before failing.
EVENT_TIMEOUT_S = 10.0
# Each empty getMore returns after this long, so the polling loop in next_change stays bounded.
MAX_AWAIT_TIME_MS = 100
# failCommand's error code; any code is resumable when the server adds the ResumableChangeStreamError label.
HOST_UNREACHABLE = 6

Document = dict[str, Any]


async def next_change(stream: AsyncChangeStream[Document], *, timeout_s: float = EVENT_TIMEOUT_S) -> Document:
    """The stream's next event, polled with try_next until ``timeout_s`` has passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (change := await stream.try_next()) is None:
        if loop.time() >= deadline:
            raise AssertionError(f"no change event within {timeout_s:g} s")
    return change


@contextlib.asynccontextmanager
async def fail_command(
    client: AsyncMongoClient[Document], data: Mapping[str, Any], *, times: int = 1
) -> AsyncIterator[None]:
    """Arm the failCommand failpoint for ``times`` matching commands; always switch it off afterwards."""
    await client.admin.command("configureFailPoint", "failCommand", mode={"times": times}, data=dict(data))
    try:
        yield
    finally:
        await client.admin.command("configureFailPoint", "failCommand", mode="off")


class CommandLog(monitoring.CommandListener):
    """Names of the commands a client started and of those that failed."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.failures: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.failures.append(event.command_name)


async def test_hello_reports_a_replica_set_primary(
    mongo_backend: Backend, mongo_client: AsyncMongoClient[Document]
) -> None:
    """hello says the server is a writable primary of a replica set (or a mongos)."""
    hello = await mongo_client.admin.command("hello")

    assert hello["isWritablePrimary"] is True
    assert "setName" in hello or hello.get("msg") == "isdbgrid"
    if mongo_backend.name == "secantusdb":
        assert hello["setName"] == "secantus"


async def test_database_stream_sees_a_pymongo_insert(database: AsyncDatabase[Document]) -> None:
    """A database-level change stream reports an insert made through PyMongo."""
    async with await database.watch(max_await_time_ms=MAX_AWAIT_TIME_MS) as stream:
        await database.items.insert_one({"_id": 1, "source": "pymongo"})
        change = await next_change(stream)

    assert change["operationType"] == "insert"
    assert change["ns"] == {"db": database.name, "coll": "items"}
    assert change["fullDocument"] == {"_id": 1, "source": "pymongo"}


async def test_database_stream_sees_a_node_insert(
    mongo_backend: Backend, database: AsyncDatabase[Document], node_writer: NodeWrite
) -> None:
    """An insert made through the Node.js driver arrives with its BSON types intact."""
    document = {"_id": ObjectId(), "source": "node", "at": datetime(2026, 1, 2, 3, 4, 5, 678000), "n": Int64(7)}
    async with await database.watch(max_await_time_ms=MAX_AWAIT_TIME_MS) as stream:
        results = await node_writer(
            mongo_backend.uri, database.name, [{"op": "insertOne", "collection": "items", "document": document}]
        )
        change = await next_change(stream)

    assert results == [{"acknowledged": True, "insertedId": document["_id"]}]
    assert change["operationType"] == "insert"
    assert change["fullDocument"] == document
    assert isinstance(change["fullDocument"]["n"], Int64)


async def test_node_writer_applies_every_operation_in_order(
    mongo_backend: Backend, database: AsyncDatabase[Document], node_writer: NodeWrite
) -> None:
    """Each supported operation runs in order and yields one result and one change event."""
    # Pipeline updates may be logged as replacements when the delta is not smaller than the document
    # (mongod does this; SecantusDB copies it), so the documents carry a little padding.
    padding = "x" * 40
    ops: list[Document] = [
        {"op": "insertOne", "collection": "items", "document": {"_id": 1, "tags": ["a"], "padding": padding}},
        {"op": "insertOne", "collection": "items", "document": {"_id": 2, "tags": [], "padding": padding}},
        {"op": "updateOne", "collection": "items", "filter": {"_id": 1}, "update": {"$push": {"tags": "b"}}},
        {"op": "updateMany", "collection": "items", "filter": {}, "update": [{"$set": {"count": {"$size": "$tags"}}}]},
        {"op": "replaceOne", "collection": "items", "filter": {"_id": 2}, "document": {"replaced": True}},
        {"op": "deleteOne", "collection": "items", "filter": {"_id": 1}},
    ]
    async with await database.watch(max_await_time_ms=MAX_AWAIT_TIME_MS) as stream:
        results = await node_writer(mongo_backend.uri, database.name, ops)
        changes = [await next_change(stream) for _ in range(7)]

    assert [result.get("modifiedCount", result.get("deletedCount")) for result in results[2:]] == [1, 2, 1, 1]
    assert [change["operationType"] for change in changes] == [
        "insert", "insert", "update", "update", "update", "replace", "delete",
    ]  # fmt: skip
    assert changes[2]["updateDescription"]["updatedFields"] == {"tags.1": "b"}
    assert [change["updateDescription"]["updatedFields"] for change in changes[3:5]] == [{"count": 2}, {"count": 0}]
    assert changes[5]["fullDocument"] == {"_id": 2, "replaced": True}


async def test_node_writer_rejects_an_unknown_operation(
    mongo_backend: Backend, database: AsyncDatabase[Document], node_writer: NodeWrite
) -> None:
    """An unknown op stops writer.mjs before it writes anything, with the op named in the error."""
    ops = [
        {"op": "insertOne", "collection": "items", "document": {"_id": 1}},
        {"op": "upsertOne", "collection": "items", "document": {"_id": 2}},
    ]
    with pytest.raises(RuntimeError, match='operation 1: unknown op "upsertOne"'):
        await node_writer(mongo_backend.uri, database.name, ops)

    assert await database.items.count_documents({}) == 0


async def test_delete_returns_the_pre_image_when_enabled(database: AsyncDatabase[Document]) -> None:
    """After collMod enables pre-images, whenAvailable returns them on delete; other collections get null."""
    await database.create_collection("audited")
    await database.command("collMod", "audited", changeStreamPreAndPostImages={"enabled": True})
    await database.audited.insert_one({"_id": 1, "state": "kept"})
    await database.plain.insert_one({"_id": 1, "state": "lost"})

    async with await database.watch(
        [{"$match": {"operationType": "delete"}}],
        full_document_before_change="whenAvailable",
        max_await_time_ms=MAX_AWAIT_TIME_MS,
    ) as stream:
        await database.audited.delete_one({"_id": 1})
        await database.plain.delete_one({"_id": 1})
        audited, plain = await next_change(stream), await next_change(stream)

    assert audited["ns"]["coll"] == "audited"
    assert audited["fullDocumentBeforeChange"] == {"_id": 1, "state": "kept"}
    assert plain["ns"]["coll"] == "plain"
    assert plain.get("fullDocumentBeforeChange") is None


@pytest.mark.failpoints
async def test_resumable_getmore_error_is_resumed_transparently(
    mongo_backend: Backend, mongo_client: AsyncMongoClient[Document], database_name: str
) -> None:
    """A getMore failing with ResumableChangeStreamError is resumed by PyMongo without losing the event."""
    app_name = f"failpoint-{database_name}"  # scopes the failpoint to this test's client
    log = CommandLog()
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongo_backend.uri, appname=app_name, event_listeners=[log])
    failure = {
        "failCommands": ["getMore"],
        "errorCode": HOST_UNREACHABLE,
        "errorLabels": ["ResumableChangeStreamError"],
        "appName": app_name,
    }
    try:
        database = client[database_name]
        async with (
            await database.watch(max_await_time_ms=MAX_AWAIT_TIME_MS) as stream,
            fail_command(mongo_client, failure),
        ):
            await database.items.insert_one({"_id": 1})
            change = await next_change(stream)
    finally:
        await client.close()

    assert change["documentKey"] == {"_id": 1}
    assert log.failures == ["getMore"]
    assert log.names.count("aggregate") == 2  # the original stream and its resume


@pytest.fixture
def expect_database_dropped(mongo_backend: Backend, database_name: str) -> Iterator[None]:
    """Fails at teardown unless ``database_name`` is gone; requested before mongo_client, so it checks after it."""
    yield
    with sync_client(mongo_backend.uri) as client:
        assert database_name not in client.list_database_names()


async def test_the_test_database_is_dropped_afterwards(
    expect_database_dropped: None,
    mongo_client: AsyncMongoClient[Document],
    database: AsyncDatabase[Document],
    database_name: str,
) -> None:
    """The per-test database exists while the test writes to it and is dropped at teardown."""
    await database.items.insert_one({"_id": 1})

    assert database_name in await mongo_client.list_database_names()
    assert len(database_name) <= 38
    assert database_name.startswith("cs_the_test_database_is_drop")


def test_secantusdb_server_starts_extra_servers(mongo_backend: Backend, secantusdb_server: SecantusdbFactory) -> None:
    """The factory starts another server with extra flags, separate from the session's."""
    backend = secantusdb_server("--oplog-max-entries", "50")

    assert backend.uri != mongo_backend.uri
    assert backend.extra["flags"] == ("--oplog-max-entries", "50")
    with sync_client(backend.uri) as client:
        assert client.admin.command("hello")["isWritablePrimary"] is True
