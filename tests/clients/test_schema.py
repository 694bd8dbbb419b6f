"""The payload contract: the checked-in JSON Schema is current, served, and matches what the service sends.

``changesync/payloads.py`` is the source; ``python -m changesync.schema`` (``changesync.schema.generate``) writes
``changesync/schema/events.json``; the TypeScript client's types are generated from that file.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from typing import Any

import httpx
import jsonschema
import jwt
import pytest
from jsonschema import Draft202012Validator

from changesync import payloads
from changesync.app import create_app
from changesync.frames import (
    Frame,
    change_draft,
    change_payload,
    coalesced_frame,
    collapsed_frame,
    message,
    oversize_payload,
    resync_frame,
)
from changesync.schema import SCHEMA_PATH
from changesync.schema.generate import render_schema
from filters import ChangeEvent
from harness import EventStream, run_service, service_settings

SECRET = "test-secret-of-at-least-32-bytes!"
FLOW = "flow-schema"
# The SSE reader waits at most this long for one event.
EVENT_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def branch(validator: Draft202012Validator, payload: dict[str, Any]) -> str:
    """The one payload class the payload matches (the schema's ``oneOf`` made explicit); fails on none or several."""
    names = [cls.__name__ for cls in (*payloads.DATA_PAYLOADS, *payloads.CONTROL_PAYLOADS)]
    matching = [
        name
        for name in names
        if validator.evolve(schema={**validator.schema, "oneOf": [{"$ref": f"#/$defs/{name}"}]}).is_valid(payload)
    ]
    assert len(matching) == 1, f"{payload} matches {matching}"
    return matching[0]


def check(validator: Draft202012Validator, payload: dict[str, Any]) -> str:
    errors = sorted(validator.iter_errors(payload), key=lambda error: error.path)
    assert not errors, "\n".join(f"{list(error.path)}: {error.message}" for error in errors)
    return branch(validator, payload)


class TestSchemaFile:
    def test_checked_in_schema_is_current(self):
        """The checked-in schema equals a fresh generation (run `python -m changesync.schema` after a change)."""
        assert SCHEMA_PATH.read_text(encoding="utf-8") == render_schema(), (
            "changesync/schema/events.json is out of date: run `python -m changesync.schema`"
        )

    def test_check_mode_agrees(self):
        """`python -m changesync.schema --check` exits 0 on the checked-in file."""
        result = subprocess.run(
            [sys.executable, "-m", "changesync.schema", "--check"], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr

    def test_is_a_valid_draft_2020_12_schema(self):
        """The file is itself valid against the 2020-12 meta-schema, with every payload class in ``$defs``."""
        schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        for cls in (*payloads.DATA_PAYLOADS, *payloads.CONTROL_PAYLOADS):
            assert cls.__name__ in schema["$defs"]
            assert schema["$defs"][cls.__name__]["additionalProperties"] is False

    def test_the_service_does_not_import_the_generator_libraries(self):
        """msgspec and pydantic are test/dev dependencies: importing the service must not load them."""
        code = (
            "import sys, changesync.app, changesync.cli, changesync.payloads, changesync.schema; "
            "print(sorted(m for m in ('msgspec', 'pydantic') if m in sys.modules))"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert result.stdout.strip() == "[]"


def sample_event(**changes: Any) -> ChangeEvent:
    event = ChangeEvent(
        collection="flowboards",
        operation="update",
        document_id="f1",
        full_document={"_id": "f1", "nodes": [{"id": "n0", "position": {"x": 1}}]},
        cluster_time=(1795715181, 1),
        wall_time="2026-11-26T17:46:21.381Z",
        event_type="SYNC_CANVAS",
        flow_id="f1",
        patch=({"op": "replace", "path": "/nodes/0/position/x", "value": 1},),
    )
    return dataclasses.replace(event, **changes)


class TestBuilders:
    """Every builder in changesync.frames produces a payload of the schema, field order unchanged."""

    @staticmethod
    def encoded(event: ChangeEvent) -> Frame:
        draft, too_large = change_draft(event, max_bytes=1 << 20)
        assert not too_large
        return draft.framed("position")

    def test_change(self, validator):
        """insert, update, replace and delete are ChangePayloads."""
        for operation in ("insert", "update", "replace", "delete"):
            patch = sample_event().patch if operation == "update" else None
            payload = dict(change_payload(sample_event(operation=operation, patch=patch)))
            assert check(validator, payload) == "ChangePayload"
        assert list(change_payload(sample_event())) == [
            "type",
            "flowId",
            "collection",
            "operation",
            "documentId",
            "document",
            "patch",
            "clusterTime",
            "wallTime",
        ]

    def test_coalesced(self, validator):
        """A coalesced update becomes a replace without a patch; a coalesced delete stays a delete."""
        payload = coalesced_frame(self.encoded(sample_event()), 3).payload()
        assert (payload["operation"], payload["patch"], payload["coalesced"]) == ("replace", None, 3)
        assert list(payload)[-1] == "coalesced" and list(payload)[3] == "operation"
        assert check(validator, payload) == "CoalescedPayload"
        deleted = coalesced_frame(self.encoded(sample_event(operation="delete", patch=None)), 2).payload()
        assert (deleted["operation"], deleted["document"]) == ("delete", None)
        assert check(validator, deleted) == "CoalescedPayload"

    def test_skipped(self, validator):
        """A collapsed log run is a SkippedPayload."""
        event = sample_event(collection="flow_logs", event_type="LOG_STREAM", operation="insert", patch=None)
        payload = collapsed_frame(self.encoded(event), 41).payload()
        assert (payload["operation"], payload["documentId"], payload["skipped"]) == ("skipped", None, 41)
        assert check(validator, payload) == "SkippedPayload"

    def test_too_large(self, validator):
        """An oversize event keeps its operation and id, and drops document and patch."""
        payload = dict(oversize_payload(change_payload(sample_event()), 2_000_000))
        assert (payload["document"], payload["patch"], payload["tooLarge"], payload["size"]) == (
            None,
            None,
            True,
            2_000_000,
        )
        assert check(validator, payload) == "TooLargePayload"

    @pytest.mark.parametrize(("reason", "resumable"), [("slow-consumer", True), ("history-lost", False)])
    def test_resync(self, validator, reason, resumable):
        """RESYNC frames carry a ResyncPayload."""
        data = resync_frame("f1", reason).data.split(b"data: ", 1)[1]
        payload = json.loads(data)
        assert payload == {"type": "RESYNC", "flowId": "f1", "reason": reason, "resumable": resumable}
        assert check(validator, payload) == "ResyncPayload"

    def test_unknown_fields_are_rejected(self, validator):
        """The payload objects are closed: an extra field is a contract change, not a silent addition."""
        payload = {**change_payload(sample_event()), "extra": 1}
        assert not validator.is_valid(payload)
        assert message("SYNC_CANVAS", payload).startswith(b"event: SYNC_CANVAS\n")


async def test_schema_route_needs_no_token():
    """GET /schema/events.json answers the checked-in file without authentication, even with JWT auth on."""
    settings = service_settings("mongodb://127.0.0.1:1/", "unused", auth={"mode": "jwt", "jwt_secret": SECRET})
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/schema/events.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/schema+json"
    assert response.content == SCHEMA_PATH.read_bytes()
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_real_payloads_validate(mongo_backend, database_name, database, validator):
    """Payloads captured from a running service (JWT auth on) validate: SNAPSHOT, insert, update, replace,
    delete, tooLarge, and RESYNC followed by a SNAPSHOT."""
    settings = service_settings(
        mongo_backend.uri,
        database_name,
        auth={"mode": "jwt", "jwt_secret": SECRET},
        limits={"max_event_bytes": 4096},
    )
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 300}, SECRET, algorithm="HS256")
    headers = {"Authorization": f"Bearer {token}"}
    board = {"_id": FLOW, "ownerId": "alice", "nodes": [], "secrets": {"k": "v"}, "__v": 0}
    await database.flowboards.insert_one(board)
    seen: dict[str, list[str]] = {}
    async with run_service(settings) as service:
        async with EventStream(service.events_url(FLOW)) as refused:
            assert refused.status_code == 401, "the event stream needs a token, unlike the schema"
        async with httpx.AsyncClient() as client:
            served = await client.get(f"{service.base_url}/schema/events.json")
            assert served.content == SCHEMA_PATH.read_bytes()
        async with EventStream(service.events_url(FLOW), headers=headers) as stream:
            assert stream.status_code == 200, stream.error_body

            async def expect(event_type: str, operation: str | None = None) -> dict[str, Any]:
                event = await stream.next(EVENT_TIMEOUT_S)
                assert event.event == event_type, event
                assert operation is None or event.data["operation"] == operation, event.data
                seen.setdefault(check(validator, event.data), []).append(event.data.get("operation", event.event))
                return event.data

            snapshot = await expect("SNAPSHOT")
            assert snapshot["collections"]["flowboards"]["documents"][0]["_id"] == FLOW
            node = {"flowId": FLOW, "label": "n1", "position": {"x": 1, "y": 2}}
            inserted = await database.flow_nodes.insert_one(node)
            await expect("SYNC_CANVAS", "insert")
            await database.flowboards.update_one({"_id": FLOW}, {"$push": {"nodes": {"id": "a", "data": {"x": 1}}}})
            update = await expect("SYNC_CANVAS", "update")
            assert update["patch"] == [{"op": "add", "path": "/nodes/0", "value": {"id": "a", "data": {"x": 1}}}]
            await database.flow_nodes.replace_one({"_id": inserted.inserted_id}, {"flowId": FLOW, "label": "n1b"})
            await expect("SYNC_CANVAS", "replace")
            await database.flow_nodes.update_one({"_id": inserted.inserted_id}, {"$set": {"blob": "x" * 8000}})
            too_large = await expect("SYNC_CANVAS", "update")
            assert too_large["tooLarge"] is True
            await database.flow_nodes.delete_one({"_id": inserted.inserted_id})
            await expect("SYNC_CANVAS", "delete")
            await database.flow_executions.insert_one({"flowId": FLOW, "status": "running", "nodes": {}})
            await expect("EXECUTION_UPDATE", "insert")
            await database.flow_logs.insert_one({"flowId": FLOW, "executionId": "e1", "nodeId": "n0", "chunk": "hi"})
            await expect("LOG_STREAM", "insert")
        query = {"lastEventId": "not-one-of-ours"}
        async with EventStream(service.events_url(FLOW, **query), headers=headers) as stream:
            resync = await stream.next(EVENT_TIMEOUT_S)
            assert (resync.event, resync.data["reason"], resync.data["resumable"]) == ("RESYNC", "invalid-id", False)
            seen.setdefault(check(validator, resync.data), []).append("RESYNC")
            after = await stream.next(EVENT_TIMEOUT_S)
            assert after.event == "SNAPSHOT"
            seen.setdefault(check(validator, after.data), []).append("SNAPSHOT")
    assert seen == {
        "SnapshotPayload": ["SNAPSHOT", "SNAPSHOT"],
        "ChangePayload": ["insert", "update", "replace", "delete", "insert", "insert"],
        "TooLargePayload": ["update"],
        "ResyncPayload": ["RESYNC"],
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"type": "SNAPSHOT", "flowId": FLOW}, validator.schema)
