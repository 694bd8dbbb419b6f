"""The live change stream's pipeline (``changesync.queries``) as a real server runs it."""

from __future__ import annotations

from changesync.queries import watch_pipeline
from changesync.settings import load_settings


async def test_server_removes_fields_denied_everywhere(database):
    """Fields every route denies never leave MongoDB: not in documents, pre-images or update descriptions."""
    routes = load_settings(environ={}).routes
    await database.create_collection("flowboards", changeStreamPreAndPostImages={"enabled": True})
    async with await database.watch(watch_pipeline(routes), full_document_before_change="whenAvailable") as stream:
        await database.flowboards.insert_one({"_id": "f", "secrets": {"k": 1}, "data": {"credentials": "c", "keep": 1}})
        await database.flowboards.update_one(
            {"_id": "f"}, {"$set": {"secrets": {"x": 2}, "data.credentials": "d", "n": 1}}
        )
        await database.flowboards.update_one({"_id": "f"}, {"$set": {"secrets.deep": 3}})
        await database.other.insert_one({"secrets": 1})
        events = [await stream.next() for _ in range(3)]
    insert, update, last = events
    assert insert["fullDocument"] == {"_id": "f", "data": {"keep": 1}}
    # The whole "secrets" field went; a dotted key ("data.credentials") is beyond $unset: the pipeline removes it.
    assert update["updateDescription"]["updatedFields"] == {"data.credentials": "d", "n": 1}
    assert update["fullDocumentBeforeChange"] == {"_id": "f", "data": {"keep": 1}}
    assert "secrets" not in last["fullDocumentBeforeChange"]
    assert last["updateDescription"]["updatedFields"] == {"secrets.deep": 3}
    assert all(event["ns"]["coll"] == "flowboards" for event in events)
