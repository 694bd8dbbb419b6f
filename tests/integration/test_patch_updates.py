"""Patch-only updates (``?updates=patch``) end to end: real writes, the real service, real sockets.

A patch-only client keeps its copy from the SNAPSHOT and the patches; it must end up with exactly the
documents a full client is sent, event for event, live, after a resume (from the replay buffer and
from the oplog) and through the Redis hub.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx
import jsonpatch
import pytest
import redis.asyncio as redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo.errors import OperationFailure

from changesync.hub.keys import Keys
from changesync.hub.wire import decode_blob
from harness import Event, EventStream, run_service, service_settings, visible

flow_numbers = itertools.count()
NODES = 20


def board(flow_id: str) -> dict[str, Any]:
    return {
        "_id": flow_id,
        "name": "Board",
        "nodes": [
            {"id": f"n{i}", "position": {"x": i * 10, "y": 0}, "data": {"label": f"Step {i}"}} for i in range(NODES)
        ],
        "edges": [{"id": f"e{i}", "source": f"n{i}", "target": f"n{i + 1}"} for i in range(NODES - 1)],
        "viewport": {"x": 0, "y": 0, "zoom": 1},
    }


class Copy:
    """A patch-only client's copy of one flowboard, from its SNAPSHOT and the events since."""

    def __init__(self, snapshot: Event) -> None:
        assert snapshot.event == "SNAPSHOT"
        documents = snapshot.data["collections"]["flowboards"]["documents"]
        self.document: Any = documents[0] if documents else None

    def apply(self, data: dict[str, Any]) -> None:
        if data.get("patchOnly"):
            assert data["document"] is None and data["patch"]
            self.document = jsonpatch.apply_patch(self.document, data["patch"])
        elif data["operation"] == "delete":
            self.document = None
        else:
            assert data["document"] is not None, "without patchOnly, a document is always there"
            self.document = data["document"]


async def canvas_events(stream: EventStream, count: int) -> list[Event]:
    events = []
    while len(events) < count:
        event = await stream.next()
        if event.event == "SYNC_CANVAS":
            events.append(event)
    return events


def same_stream(full: list[Event], patch_only: list[Event]) -> None:
    """The same events, in the same order, with the same ids; the variants differ only in the document."""
    assert [event.id for event in full] == [event.id for event in patch_only]
    for one, other in zip(full, patch_only, strict=True):
        if other.data.get("patchOnly"):
            assert one.data["patch"] == other.data["patch"] and one.data["document"] is not None
            assert {**one.data, "document": None, "patchOnly": True} == other.data
        else:
            assert one.data == other.data


@pytest.fixture
async def service(mongo_backend, database_name):
    async with run_service(service_settings(mongo_backend.uri, database_name)) as running:
        yield running


async def test_bad_updates_mode_is_a_400(service):
    """An unknown ``updates`` value is refused before the stream starts, with what is expected."""
    async with httpx.AsyncClient(base_url=service.base_url, timeout=5) as client:
        response = await client.get("/flows/ok/events?updates=diff")
    assert response.status_code == 400
    assert response.json() == {"error": "invalid updates mode", "expected": "full or patch"}


async def test_two_clients_one_per_mode(service, database):
    """A full and a patch-only client of one flow: same events, same order, same ids, same documents."""
    flow_id = f"modes-{next(flow_numbers)}"
    await database.flowboards.insert_one(board(flow_id))
    async with (
        EventStream(service.events_url(flow_id)) as full,
        EventStream(service.events_url(flow_id, updates="patch")) as patch_only,
    ):
        local = Copy(await patch_only.next())
        assert (await full.next()).event == "SNAPSHOT"
        writes = [
            {"$set": {"nodes.3.position.x": 101, "nodes.3.position.y": 7}},
            {"$push": {"nodes": {"id": "n20", "position": {"x": 0, "y": 0}}}},
            {"$set": {"name": "Renamed"}},
        ]
        for write in writes:
            await database.flowboards.update_one({"_id": flow_id}, write)
        await database.flowboards.replace_one({"_id": flow_id}, board(flow_id))
        received_full = await canvas_events(full, len(writes) + 1)
        received_patch = await canvas_events(patch_only, len(writes) + 1)
        same_stream(received_full, received_patch)
        assert [bool(event.data.get("patchOnly")) for event in received_patch] == [True, True, True, False]
        for full_event, patch_event in zip(received_full, received_patch, strict=True):
            local.apply(patch_event.data)
            assert local.document == full_event.data["document"]
        full_bytes, patch_bytes = len(full.raw[1]), len(patch_only.raw[1])
        print(f"a node drag on a {NODES}-node board: {full_bytes} bytes full, {patch_bytes} bytes patch-only")
        assert patch_bytes * 4 < full_bytes


async def resume_in_patch_mode(service, database, flow_id: str) -> None:
    """Updates missed while away arrive patch-only after a resume and bring the copy up to date."""
    await database.flowboards.insert_one(board(flow_id))
    async with EventStream(service.events_url(flow_id, updates="patch")) as first:
        local = Copy(await first.next())
        await database.flowboards.update_one({"_id": flow_id}, {"$set": {"nodes.0.position.x": 1}})
        local.apply((await first.next()).data)
        last_id = first.last_id
    for x in range(2, 6):
        await database.flowboards.update_one({"_id": flow_id}, {"$set": {f"nodes.{x}.position.x": x}})
    await database.flow_logs.insert_one({"flowId": flow_id, "chunk": "end"})
    url = service.events_url(flow_id, updates="patch")
    async with EventStream(url, headers={"Last-Event-ID": last_id}) as resumed:
        missed = []
        while (event := await resumed.next()).event != "LOG_STREAM":
            missed.append(event)
    assert [event.event for event in missed] == ["SYNC_CANVAS"] * 4
    for event in missed:
        assert event.data["patchOnly"] is True
        local.apply(event.data)
    assert local.document == visible(await database.flowboards.find_one({"_id": flow_id}))


async def test_resume_in_patch_mode_from_the_replay_buffer(service, database):
    """A resume served from memory hands the patch-only variants out."""
    await resume_in_patch_mode(service, database, f"resume-memory-{next(flow_numbers)}")


async def test_resume_in_patch_mode_from_the_oplog(mongo_backend, database_name, database):
    """A resume caught up from the oplog (no replay buffer) hands the patch-only variants out too."""
    settings_ = service_settings(mongo_backend.uri, database_name, stream={"replay_per_flow": 0})
    async with run_service(settings_) as service:
        await resume_in_patch_mode(service, database, f"resume-oplog-{next(flow_numbers)}")


KEYS = st.sampled_from(["name", "x", "y", "label", "zoom"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.text(max_size=4))
NODE = st.fixed_dictionaries({"id": st.text("abc", min_size=1, max_size=2), "x": st.integers(0, 9)})


@st.composite
def canvas_updates(draw: st.DrawFn) -> list[Any]:
    """Writes a canvas editor makes: moves, renames, nodes added, removed, reordered."""
    index = st.integers(0, 4)
    update = st.one_of(
        st.builds(lambda i, v: {"$set": {f"nodes.{i}.x": v}}, index, st.integers(0, 99)),
        st.builds(lambda k, v: {"$set": {k: v}}, KEYS, SCALARS),
        st.builds(lambda k: {"$unset": {k: ""}}, KEYS),
        st.builds(lambda n: {"$push": {"nodes": n}}, NODE),
        st.builds(lambda i: [{"$set": {"nodes": {"$slice": ["$nodes", i]}}}], index),
        st.just([{"$set": {"nodes": {"$reverseArray": "$nodes"}}}]),
        st.builds(lambda i: {"$pull": {"nodes": {"x": i}}}, st.integers(0, 9)),
    )
    return draw(st.lists(update, min_size=1, max_size=6))


# 25 examples, each two streams over real writes to the service: about 15 s here.
@pytest.mark.timeout(120)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(nodes=st.lists(NODE, max_size=4), changes=canvas_updates())
async def test_patches_on_the_snapshot_give_the_full_documents(service, database, nodes, changes):
    """Random update sequences: a patch-only copy from the SNAPSHOT equals every full-mode document."""
    flow_id = f"prop-patch-{next(flow_numbers)}"
    async with EventStream(service.events_url(flow_id, snapshot="false")) as full:
        await database.flowboards.insert_one({"_id": flow_id, "nodes": nodes})
        async with EventStream(service.events_url(flow_id, updates="patch")) as patch_only:
            local = Copy(await patch_only.next())
            for change in changes:
                try:
                    await database.flowboards.update_one({"_id": flow_id}, change)
                except OperationFailure:
                    continue  # MongoDB refuses some random updates
            await database.flow_logs.insert_one({"flowId": flow_id, "chunk": "end"})
            received: dict[str, list[Event]] = {"full": [], "patch": []}
            for name, stream in (("full", full), ("patch", patch_only)):
                while (event := await stream.next()).event != "LOG_STREAM":
                    received[name].append(event)
    inserted, *updated = received["full"]
    assert inserted.data["operation"] == "insert"
    assert local.document == inserted.data["document"]  # the snapshot was read before any update
    same_stream(updated, received["patch"])
    for full_event, patch_event in zip(updated, received["patch"], strict=True):
        local.apply(patch_event.data)
        assert local.document == full_event.data["document"]
    assert local.document == visible(await database.flowboards.find_one({"_id": flow_id}))


async def test_both_modes_and_a_resume_through_the_redis_hub(mongo_backend, database_name, database, redis_server):
    """Two processes on one hub: each client gets its variant from the Redis blob, live and from its history."""
    hub = {"url": redis_server.url, "lease_ttl_s": 1.0}
    settings_a = service_settings(mongo_backend.uri, database_name, hub=hub)
    settings_b = service_settings(mongo_backend.uri, database_name, hub=hub)
    flow_id = f"hub-patch-{next(flow_numbers)}"
    async with run_service(settings_a) as a, run_service(settings_b) as b:
        async with httpx.AsyncClient() as http:
            for running in (a, b):
                await until_ready(http, running.base_url)
        await database.flowboards.insert_one(board(flow_id))
        async with (
            EventStream(a.events_url(flow_id)) as full,
            EventStream(b.events_url(flow_id, updates="patch")) as patch_only,
        ):
            local = Copy(await patch_only.next())
            assert (await full.next()).event == "SNAPSHOT"
            for x in range(3):
                await database.flowboards.update_one({"_id": flow_id}, {"$set": {f"nodes.{x}.position.x": 50 + x}})
            received_full, received_patch = await canvas_events(full, 3), await canvas_events(patch_only, 3)
            same_stream(received_full, received_patch)
            assert all(event.data["patchOnly"] for event in received_patch)
            for event in received_patch[:1]:
                local.apply(event.data)
        # Redis's history holds both variants of each update, as one blob.
        history = redis.from_url(redis_server.url)
        try:
            entries = await history.xrange(Keys.for_database(database_name).history(flow_id))
        finally:
            await history.aclose()
        stored = [decode_blob(stream_id.decode(), fields[b"m"]).frame for stream_id, fields in entries]
        assert [(frame.position, frame.patch_data != b"") for frame in stored[-3:]] == [
            (event.id, True) for event in received_patch
        ]
        # From that history: a client on the other process resumes after the first update.
        url = a.events_url(flow_id, updates="patch")
        async with EventStream(url, headers={"Last-Event-ID": received_patch[0].id}) as resumed:
            missed = await canvas_events(resumed, 2)
        assert [event.id for event in missed] == [event.id for event in received_patch[1:]]
        for event in missed:
            assert event.data["patchOnly"] is True
            local.apply(event.data)
        assert local.document == visible(await database.flowboards.find_one({"_id": flow_id}))


async def until_ready(http: httpx.AsyncClient, base_url: str) -> None:
    async with asyncio.timeout(10):
        while (await http.get(f"{base_url}/readyz")).status_code != 200:  # noqa: ASYNC110 - polling an endpoint
            await asyncio.sleep(0.05)
