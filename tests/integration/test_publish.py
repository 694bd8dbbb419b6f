"""POST /flows/{flowId}/events: events that are not database writes, through real HTTP, on the in-process hub.

(Publishing through the Redis hub, from one process to the clients of another: ``test_hub.py``.)
"""

from __future__ import annotations

import asyncio
import time

import httpx
import jwt
import pytest

from harness import EventStream, metric, run_service, service_settings

SECRET = "a-publishing-secret-long-enough-for-hs256!"
FLOW = "flow-publish"


def token(subject: str = "flow-runner", *, roles: list[str] | None = None, lifetime_s: int = 300) -> str:
    now = int(time.time())
    claims = {"sub": subject, "exp": now + lifetime_s, "roles": ["changesync-publisher"] if roles is None else roles}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def reader_token() -> str:
    return token("reader", roles=["changesync-service"])


def chunk(seq: int, **extra: object) -> dict[str, object]:
    return {
        "type": "LOG_STREAM",
        "data": {"executionId": "run-1", "nodeId": "n1", "seq": seq, "chunk": f"w{seq} ", **extra},
    }


@pytest.fixture
async def service(mongo_backend, database_name):
    settings = service_settings(
        mongo_backend.uri,
        database_name,
        auth={"mode": "jwt", "jwt_secret": SECRET},
        publish={"event_types": ("LOG_STREAM", "SYNC_CANVAS"), "rate_per_s": 50.0},
        limits={"max_event_bytes": 64 * 1024},
    )
    async with run_service(settings) as running:
        yield running


async def post(service, body, *, flow: str = FLOW, bearer: str | None = None, content: bytes | None = None):
    headers = {} if bearer is None else {"Authorization": f"Bearer {bearer}"}
    async with httpx.AsyncClient() as http:
        url = f"{service.base_url}/flows/{flow}/events"
        if content is not None:
            return await http.post(url, content=content, headers={**headers, "Content-Type": "application/json"})
        return await http.post(url, json=body, headers=headers)


async def test_a_published_chunk_reaches_subscribers_filtered_and_resumable(service):
    """A published LOG_STREAM chunk is answered 202 with its id, reaches the flow's subscribers with the
    route's rules applied, and a client that comes back with an earlier id gets it from the hub's history."""
    headers = {"Authorization": f"Bearer {reader_token()}"}
    async with EventStream(service.events_url(FLOW, snapshot="false"), headers=headers) as stream:
        first = await post(service, chunk(1, _internal="never", secrets={"k": 1}), bearer=token())
        assert first.status_code == 202, first.text
        received = await stream.next()
        second = await post(service, chunk(2), bearer=token())
        assert second.status_code == 202
        assert (await stream.next()).data["document"]["seq"] == 2
    assert received.event == "LOG_STREAM" and received.id == first.json()["id"]
    document = received.data["document"]
    assert document["flowId"] == FLOW and document["seq"] == 1 and document["chunk"] == "w1 "
    assert "_internal" not in document and "secrets" not in document
    assert received.data["operation"] == "insert" and received.data["collection"] == "flow_logs"
    async with EventStream(
        service.events_url(FLOW), headers={**headers, "Last-Event-ID": first.json()["id"]}
    ) as resumed:
        assert (await resumed.next()).data["document"]["seq"] == 2
    assert await metric(service, "changesync_published_total", type="LOG_STREAM") == 2


@pytest.mark.parametrize(
    ("body", "bearer", "status", "reason"),
    [
        (chunk(1), None, 401, "unauthorized"),
        (chunk(1), "reader", 403, "forbidden"),
        ({"type": "NOPE", "data": {}}, "publisher", 400, "unknown-type"),
        ({"type": "LOG_STREAM"}, "publisher", 400, "no-data"),
        ([1, 2], "publisher", 400, "not-an-object"),
        ({"type": "SYNC_CANVAS", "data": {}}, "publisher", 400, "ambiguous-type"),
        ({"type": "LOG_STREAM", "data": {"flowId": "another-flow"}}, "publisher", 400, "flow-mismatch"),
        ({"type": "LOG_STREAM", "data": {"visibility": "private"}}, "publisher", 422, "dropped"),
        ({"type": "LOG_STREAM", "data": {"chunk": "x" * 70_000}}, "publisher", 413, "too-large"),
    ],
)
async def test_bad_events_are_refused_counted_and_never_delivered(service, body, bearer, status, reason):
    """Each kind of bad event gets its 4xx, is counted by reason, and no client receives anything."""
    bearers = {None: None, "reader": reader_token(), "publisher": token()}
    headers = {"Authorization": f"Bearer {reader_token()}"}
    async with EventStream(service.events_url(FLOW, snapshot="false"), headers=headers) as stream:
        response = await post(service, body, bearer=bearers[bearer])
        assert response.status_code == status, response.text
        assert response.json()["reason"] == reason, "the answer's code is the metric's label"
        assert await metric(service, "changesync_publish_refused_total", reason=reason) == 1
        marker = await post(service, chunk(99), bearer=token())
        assert marker.status_code == 202
        assert (await stream.next()).data["document"]["seq"] == 99, "the refused event reached no one"


async def test_not_json_and_too_fast(service):
    """A body that is not JSON is a 400; past the subject's rate, 429 with Retry-After."""
    response = await post(service, None, bearer=token(), content=b"{not json")
    assert response.status_code == 400 and response.json()["error"] == "the body is not JSON"
    assert response.json()["reason"] == "not-json"
    hasty = token("hasty")
    async with httpx.AsyncClient() as http:
        url = f"{service.base_url}/flows/{FLOW}/events"
        responses = await asyncio.gather(
            *(http.post(url, json=chunk(seq), headers={"Authorization": f"Bearer {hasty}"}) for seq in range(150))
        )
    statuses = [response.status_code for response in responses]
    assert 202 in statuses and 429 in statuses, statuses
    assert next(r for r in responses if r.status_code == 429).headers["retry-after"] == "1"
    refused = await metric(service, "changesync_publish_refused_total", reason="too-fast")
    assert refused == statuses.count(429)


async def test_publishing_is_off_unless_listed(mongo_backend, database_name):
    """Without publish.event_types POST is not allowed, and the answer says which setting allows it."""
    settings = service_settings(mongo_backend.uri, database_name)
    async with run_service(settings) as running:
        response = await post(running, chunk(1))
    assert response.status_code == 405 and response.headers["allow"] == "GET"
    assert "publish.event_types" in response.json()["detail"]
