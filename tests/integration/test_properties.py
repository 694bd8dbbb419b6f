"""Property-based, end to end: random documents and updates through MongoDB and the real service.

For every example: the client's copy, rebuilt from the first event and each patch, equals the
filtered document in MongoDB; and no denied path ever appears in any payload.
"""

from __future__ import annotations

import itertools
from typing import Any

import jsonpatch
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo.errors import OperationFailure

from harness import EventStream, run_service, service_settings

KEYS = st.sampled_from(["a", "b", "nodes", "data", "credentials", "secrets", "_x", "__v", "label", "0"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.text(max_size=5))
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(KEYS, children, max_size=3)),
    max_leaves=12,
)
flow_numbers = itertools.count()


def denied(path: tuple[Any, ...]) -> bool:
    """The default rules for flowboards, written independently of the filters package."""
    names = [part for part in path if isinstance(part, str)]
    if any(name.startswith("_") for name in names[1:]) or (names and names[0].startswith("_") and names[0] != "_id"):
        return True
    if names[:1] == ["secrets"]:
        return True
    # deny "data.credentials" and "nodes.*.data.credentials"; array indices are crossed implicitly
    return names[:2] == ["data", "credentials"] or (
        names[:3] == ["nodes", "data", "credentials"] and len(path) > 1 and isinstance(path[1], int)
    )


def leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            paths += leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths += leaves(item, (*path, index))
    return paths


def pointer_path(pointer: str, document: Any) -> tuple[Any, ...]:
    """A JSON pointer as path components, with array indices as ints where the target is an array."""
    parts: list[Any] = []
    node = document
    for raw in pointer.split("/")[1:]:
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list) and (token.isdigit() or token == "-"):
            index = len(node) if token == "-" else int(token)
            parts.append(index)
            node = node[index] if index < len(node) else None
        else:
            parts.append(token)
            node = node.get(token) if isinstance(node, dict) else None
    return tuple(parts)


def visible(value: Any, path: tuple[Any, ...] = ()) -> Any:
    if isinstance(value, dict):
        return {key: visible(item, (*path, key)) for key, item in value.items() if not denied((*path, key))}
    if isinstance(value, list):
        return [visible(item, (*path, index)) for index, item in enumerate(value)]
    return value


@st.composite
def updates(draw: st.DrawFn) -> list[Any]:
    paths = st.lists(KEYS, min_size=1, max_size=3).map(".".join)
    update = st.one_of(
        st.builds(lambda p, v: {"$set": {p: v}}, paths, VALUES),
        st.builds(lambda p: {"$unset": {p: ""}}, paths),
        st.builds(lambda v: {"$push": {"nodes": v}}, VALUES),
        st.builds(lambda v: {"$pull": {"nodes": v}}, SCALARS),
        st.builds(lambda v: [{"$set": {"nodes": {"$slice": [{"$ifNull": ["$nodes", []]}, v]}}}], st.integers(0, 3)),
        st.builds(lambda k, v: [{"$set": {k: v}}], KEYS.filter(lambda k: k != "0"), SCALARS),
    )
    return draw(st.lists(update, min_size=1, max_size=6))


@pytest.fixture
async def service(mongo_backend, database_name):
    async with run_service(service_settings(mongo_backend.uri, database_name)) as running:
        yield running


# 30 examples, each a round trip of real writes to the service's SSE stream: about 17 s here.
@pytest.mark.timeout(120)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=st.dictionaries(KEYS, VALUES, max_size=5), changes=updates())
async def test_random_updates_replay_exactly_and_leak_nothing(service, database, document, changes):
    """Random documents and updates: patches replay exactly; no denied path leaks, nor in snapshots and resumes."""
    flow_id = f"prop-{next(flow_numbers)}"
    document = {"_id": flow_id, "nodes": [], **{k: v for k, v in document.items() if k != "_id"}}
    async with EventStream(service.events_url(flow_id, snapshot="false")) as stream:
        await database.flowboards.insert_one(document)
        for change in changes:
            try:
                await database.flowboards.update_one({"_id": flow_id}, change)
            except OperationFailure:
                continue  # MongoDB refuses some random updates (path conflicts, $push on a non-array)
        await database.flow_logs.insert_one({"flowId": flow_id, "chunk": "end"})

        local: Any = None
        while True:
            event = await stream.next()
            data = event.data
            if data["collection"] == "flow_logs":
                break
            for path in leaves(data["document"]):
                assert not denied(path), f"denied path {path} in document {data['document']}"
            if data["operation"] == "update":
                assert data["patch"], "an update event always carries a non-empty patch"
                for operation in data["patch"]:
                    base = pointer_path(operation["path"], local)
                    assert not denied(base), f"denied path in patch {operation}"
                    for path in leaves(operation.get("value")):
                        assert not denied((*base, *path)), f"denied path in patch value {operation}"
                local = jsonpatch.apply_patch(local, data["patch"])
                assert local == data["document"]
            else:
                local = data["document"]
        stored = await database.flowboards.find_one({"_id": flow_id})
        assert local == visible(stored)
        first_id = stream.first_id
    # A snapshot and a resume (replaying everything after the insert) obey the same rules.
    async with EventStream(service.events_url(flow_id, snapshot="true")) as fresh:
        snapshot = await fresh.next()
        (board,) = snapshot.data["collections"]["flowboards"]["documents"]
        assert board == visible(stored)
    async with EventStream(service.events_url(flow_id), headers={"Last-Event-ID": first_id}) as resumed:
        await database.flow_logs.insert_one({"flowId": flow_id, "chunk": "end again"})
        while (event := await resumed.next()).data["collection"] != "flow_logs" or event.data["document"][
            "chunk"
        ] != "end again":
            for path in leaves(event.data.get("document")):
                assert not denied(path), f"denied path {path} in a resumed event"
