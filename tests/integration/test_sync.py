"""End to end: writers → MongoDB → change stream → filters → SSE over real HTTP."""

from __future__ import annotations

import re

import httpx
import jsonpatch
import pytest

from harness import EventStream, run_service, service_settings, visible

DENIED_MARKERS = ("never-sent", "sk-live", "__v", "_internal", "secrets", "credentials")


def assert_clean(stream: EventStream) -> None:
    """No denied field name or secret value appears anywhere in what the client received."""
    for data in stream.raw:
        for marker in DENIED_MARKERS:
            assert marker not in data, f"{marker!r} leaked in {data}"


def canvas(flow_id: str, **extra) -> dict:
    return {
        "_id": flow_id,
        "name": "Flow",
        "ownerId": "u1",
        "nodes": [
            {
                "id": f"n{i}",
                "position": {"x": i, "y": 0},
                "data": {"label": f"L{i}", "credentials": {"apiKey": "sk-live"}},
            }
            for i in range(3)
        ],
        "edges": [{"id": "e0", "source": "n0", "target": "n1"}],
        "viewport": {"x": 0, "y": 0, "zoom": 1},
        "secrets": {"token": "never-sent"},
        "__v": 0,
        "_internalRev": 7,
        **extra,
    }


@pytest.fixture
async def service(mongo_backend, database_name):
    async with run_service(service_settings(mongo_backend.uri, database_name)) as running:
        yield running


class Canvas:
    """A client-side copy of a flow's canvas, kept up to date from SYNC_CANVAS events."""

    def __init__(self) -> None:
        self.document: dict | None = None

    def apply(self, data: dict) -> None:
        if data["operation"] in ("insert", "replace"):
            self.document = data["document"]
        elif data["operation"] == "update":
            assert data["patch"] is not None
            self.document = jsonpatch.apply_patch(self.document, data["patch"])
            assert self.document == data["document"], "patch applied to the previous document must give the new one"
        else:
            self.document = None


async def test_canvas_edits_reach_the_flow(service, database):
    """Every kind of write to flowboards arrives as SYNC_CANVAS, patches replay exactly, nothing denied leaks."""
    flow_id = "flow-a"
    boards = database.flowboards
    async with EventStream(service.events_url(flow_id, snapshot="false")) as stream:
        local = Canvas()

        async def expect(operation: str) -> dict:
            event = await stream.next()
            assert event.event == "SYNC_CANVAS"
            assert event.id
            data = event.data
            assert (data["type"], data["flowId"], data["collection"]) == ("SYNC_CANVAS", flow_id, "flowboards")
            assert data["operation"] == operation
            assert data["documentId"] == flow_id
            assert data["clusterTime"]["t"] > 0
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["wallTime"])
            local.apply(data)
            stored = await boards.find_one({"_id": flow_id})
            assert local.document == (None if stored is None else visible(stored))
            return data

        await boards.insert_one(canvas(flow_id))
        await expect("insert")
        await boards.update_one({"_id": flow_id}, {"$set": {"nodes.1.position.x": 42, "viewport.zoom": 1.5}})
        await expect("update")
        await boards.update_one(
            {"_id": flow_id}, {"$push": {"nodes": {"id": "n3", "data": {"credentials": {"apiKey": "sk-live"}}}}}
        )
        await expect("update")
        await boards.update_one({"_id": flow_id}, {"$pull": {"edges": {"id": "e0"}}})
        await expect("update")
        await boards.update_one({"_id": flow_id}, {"$unset": {"viewport.x": ""}})
        await expect("update")
        await boards.update_one({"_id": flow_id}, [{"$set": {"nodes": {"$slice": ["$nodes", 2]}}}])
        await expect("update")
        await boards.update_one(
            {"_id": flow_id}, {"$set": {"name": "Renamed", "secrets.token": "never-sent", "__v": 1}}
        )
        data = await expect("update")
        assert data["patch"] == [{"op": "replace", "path": "/name", "value": "Renamed"}]
        await boards.replace_one({"_id": flow_id}, canvas(flow_id, name="Replaced"))
        await expect("replace")
        await boards.delete_one({"_id": flow_id})
        data = await expect("delete")
        assert data["document"] is None
        assert_clean(stream)


@pytest.mark.node
# func_only: the session's first use of node_writer runs `npm ci` in its set-up.
@pytest.mark.timeout(10, func_only=True)
async def test_writes_from_the_nodejs_driver(service, mongo_backend, database_name, node_writer):
    """Writes made by the Node.js driver reach the browser exactly like PyMongo's."""
    flow_id = "flow-node"
    async with EventStream(service.events_url(flow_id, snapshot="false")) as stream:
        local = Canvas()
        await node_writer(
            mongo_backend.uri,
            database_name,
            [
                {"op": "insertOne", "collection": "flowboards", "document": canvas(flow_id)},
                {
                    "op": "updateOne",
                    "collection": "flowboards",
                    "filter": {"_id": flow_id},
                    "update": {"$set": {"nodes.0.position.y": 9}},
                },
                {
                    "op": "updateOne",
                    "collection": "flowboards",
                    "filter": {"_id": flow_id},
                    "update": {"$push": {"edges": {"id": "e9"}}},
                },
                {
                    "op": "updateOne",
                    "collection": "flowboards",
                    "filter": {"_id": flow_id},
                    "update": [{"$set": {"viewport.zoom": 2}}],
                },
                {
                    "op": "insertOne",
                    "collection": "flow_logs",
                    "document": {"flowId": flow_id, "executionId": "x1", "nodeId": "n0", "seq": 0, "chunk": "hi"},
                },
                {"op": "deleteOne", "collection": "flowboards", "filter": {"_id": flow_id}},
            ],
        )
        operations = []
        for _ in range(6):
            event = await stream.next()
            operations.append((event.event, event.data["operation"]))
            if event.event == "SYNC_CANVAS":
                local.apply(event.data)
        assert operations == [
            ("SYNC_CANVAS", "insert"),
            ("SYNC_CANVAS", "update"),
            ("SYNC_CANVAS", "update"),
            ("SYNC_CANVAS", "update"),
            ("LOG_STREAM", "insert"),
            ("SYNC_CANVAS", "delete"),
        ]
        assert_clean(stream)


async def test_every_default_collection_routes_to_its_flow(service, database):
    """nodes, edges, executions and logs carry their flowId to the right flow with the right type; deletes too."""
    flow_id = "flow-b"
    async with EventStream(service.events_url(flow_id, snapshot="false")) as stream:
        node = await database.flow_nodes.insert_one({"flowId": flow_id, "id": "n1", "data": {"credentials": "sk-live"}})
        edge = await database.flow_edges.insert_one({"flowId": flow_id, "id": "e1", "source": "n1", "target": "n2"})
        run = await database.flow_executions.insert_one({"flowId": flow_id, "status": "running", "nodes": {}})
        await database.flow_executions.update_one(
            {"_id": run.inserted_id}, {"$set": {"nodes.n1": {"status": "done"}, "status": "succeeded"}}
        )
        await database.flow_logs.insert_one(
            {"flowId": flow_id, "executionId": str(run.inserted_id), "nodeId": "n1", "seq": 0, "chunk": "Hel"}
        )
        await database.flow_nodes.delete_one({"_id": node.inserted_id})
        await database.flow_edges.delete_one({"_id": edge.inserted_id})
        expected = [
            ("SYNC_CANVAS", "flow_nodes", "insert"),
            ("SYNC_CANVAS", "flow_edges", "insert"),
            ("EXECUTION_UPDATE", "flow_executions", "insert"),
            ("EXECUTION_UPDATE", "flow_executions", "update"),
            ("LOG_STREAM", "flow_logs", "insert"),
            ("SYNC_CANVAS", "flow_nodes", "delete"),
            ("SYNC_CANVAS", "flow_edges", "delete"),
        ]
        received = []
        for _ in expected:
            event = await stream.next()
            assert event.data["flowId"] == flow_id
            received.append((event.event, event.data["collection"], event.data["operation"]))
        assert received == expected
        assert_clean(stream)


async def test_other_flows_and_filtered_changes_send_nothing(service, database):
    """A client sees nothing of other flows, private documents, or updates that only touched denied fields."""
    async with (
        EventStream(service.events_url("flow-c", snapshot="false")) as watched,
        EventStream(service.events_url("flow-d", snapshot="false")) as other,
    ):
        await database.flowboards.insert_one(canvas("flow-c"))
        await database.flowboards.update_one({"_id": "flow-c"}, {"$set": {"secrets.token": "x", "_internalRev": 8}})
        await database.flowboards.insert_one(canvas("flow-private", visibility="private"))
        await database.flow_logs.insert_one({"flowId": "flow-c", "internal": True, "chunk": "hidden"})
        await database.flow_logs.insert_one({"flowId": "flow-d", "seq": 1, "chunk": "marker"})
        await database.flow_logs.insert_one({"flowId": "flow-c", "seq": 2, "chunk": "marker"})
        # Changes are delivered in oplog order: the marker can only come first if nothing came before it.
        first = await other.next()
        assert (first.event, first.data["document"]["chunk"]) == ("LOG_STREAM", "marker")
        insert = await watched.next()
        assert insert.data["operation"] == "insert"
        marker = await watched.next()
        assert marker.data["document"]["chunk"] == "marker"


async def test_types_query_selects_event_types(service, database):
    """?types=LOG_STREAM delivers only log chunks."""
    async with EventStream(service.events_url("flow-e", types="LOG_STREAM", snapshot="false")) as stream:
        await database.flowboards.insert_one(canvas("flow-e"))
        await database.flow_executions.insert_one({"flowId": "flow-e", "status": "running"})
        await database.flow_logs.insert_one({"flowId": "flow-e", "seq": 0, "chunk": "only me"})
        event = await stream.next()
        assert (event.event, event.data["document"]["chunk"]) == ("LOG_STREAM", "only me")


async def test_unroutable_documents_are_counted_and_do_not_stall(service, database):
    """Documents without a usable flow id are skipped, counted in /metrics, and later events still flow."""
    async with EventStream(service.events_url("flow-f", snapshot="false")) as stream:
        await database.flow_logs.insert_many(
            [{"chunk": "no flow"}, {"flowId": {"nested": 1}, "chunk": "object"}, {"flowId": None}, {"flowId": True}]
        )
        await database.flow_logs.insert_one({"flowId": "flow-f", "seq": 0, "chunk": "after"})
        event = await stream.next()
        assert event.data["document"]["chunk"] == "after"
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{service.base_url}/metrics")).text
    match = re.search(r'changesync_events_dropped_total\{collection="flow_logs",reason="unroutable"\} (\d+)', metrics)
    assert match and int(float(match.group(1))) == 4, metrics


async def test_operational_endpoints(service):
    """healthz is alive, readyz reports the open stream, metrics speak Prometheus."""
    async with httpx.AsyncClient(base_url=service.base_url) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"changeStreamOpen": True, "polling": True, "lagUnderBound": True}
        metrics = await client.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "changesync_clients_connected" in metrics.text


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("/flows/bad%20id/events", 400, "invalid flow id"),
        ("/flows/" + "x" * 300 + "/events", 400, "invalid flow id"),
        ("/flows/ok/events?types=NOPE", 400, "unknown event type"),
        ("/flows/ok/events?types=", 400, "unknown event type"),
        ("/nowhere", 404, "Not Found"),
    ],
)
async def test_bad_requests_get_json_errors(service, path, status, error):
    """Bad requests are answered at once with a JSON error, never a hanging stream."""
    async with httpx.AsyncClient(base_url=service.base_url, timeout=5) as client:
        response = await client.get(path)
    assert response.status_code == status
    assert response.json()["error"] == error


async def test_stream_headers_and_retry_hint(service):
    """The stream is text/event-stream, uncached, and opens with a retry hint."""
    async with (
        httpx.AsyncClient(timeout=5) as client,
        client.stream("GET", service.events_url("flow-h", snapshot="false")) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        first = await anext(response.aiter_text())
        assert first.startswith("retry: 3000\n")


async def test_a_writers_mutation_id_is_the_events_origin_and_never_in_documents(service, database):
    """Writes stamped with ``meta.mutationId`` carry it as ``origin``; unstamped writes, including
    later updates of a stamped document, carry none; the field reaches no client."""
    flow_id = "flow-origin"
    async with EventStream(service.events_url(flow_id, snapshot="false")) as stream:
        await database.flowboards.insert_one({**canvas(flow_id), "meta": {"mutationId": "m-1", "by": "editor"}})
        await database.flowboards.update_one(
            {"_id": flow_id}, {"$set": {"nodes.0.position.x": 50, "meta.mutationId": "m-2"}}
        )
        await database.flowboards.update_one({"_id": flow_id}, {"$set": {"nodes.1.position.x": 60}})
        await database.flowboards.update_one({"_id": flow_id}, {"$set": {"meta.mutationId": "m-3"}})
        await database.flowboards.update_one({"_id": flow_id}, {"$set": {"name": "Renamed"}})
        events = [(await stream.next()).data for _ in range(4)]
        assert [event.get("origin") for event in events] == ["m-1", "m-2", None, None]
        assert events[3]["document"]["name"] == "Renamed", "the stamp alone published nothing"
        for event in events:
            assert event["document"]["meta"] == {"by": "editor"}
            assert "mutationId" not in str(event["patch"])
        assert "m-3" not in "".join(stream.raw)
