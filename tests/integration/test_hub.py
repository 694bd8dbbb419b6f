"""Hub mode on a real Valkey (or Redis) and a real MongoDB-compatible server: several processes, one watcher.

Services run in this process (uvicorn on loopback, each its own app) or as separate processes
(``harness.ServiceProcess``) where one must be killed. Every client's sequence is checked: nothing
lost, nothing twice, in order.
"""

from __future__ import annotations

import asyncio

import httpx
from tabs import change_stream_cursors

from harness import EventStream, run_service, service_settings

FLOW = "flow-hub"
# How long a test waits for one event; the hub path adds milliseconds.
EVENT_TIMEOUT_S = 10.0


def hub_settings(mongo_backend, database_name, redis_url, **overrides):
    hub = {"url": redis_url, "lease_ttl_s": 1.0, **overrides.pop("hub", {})}
    return service_settings(mongo_backend.uri, database_name, hub=hub, **overrides)


async def readiness(service) -> dict:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{service.base_url}/readyz")).json()


async def until_ready(service, timeout_s: float = 10.0) -> dict:
    async with asyncio.timeout(timeout_s):
        while (body := await readiness(service))["status"] != "ready":  # noqa: ASYNC110 - polling an endpoint
            await asyncio.sleep(0.05)
    return body


async def seqs_until(stream: EventStream, last: int) -> list[int]:
    """The seq of every LOG_STREAM event until ``last`` arrives."""
    seen: list[int] = []
    while not seen or seen[-1] != last:
        event = await stream.next(EVENT_TIMEOUT_S)
        if event.event == "LOG_STREAM":
            seen.append(event.data["document"]["seq"])
    return seen


async def test_two_processes_one_watcher_clients_on_both(mongo_backend, database_name, database, redis_server):
    """Two services with one hub: one of them watches, both serve; writes reach the clients of both,
    in order, once, and MongoDB holds one change stream for the deployment."""
    settings_a = hub_settings(mongo_backend, database_name, redis_server.url)
    settings_b = hub_settings(mongo_backend, database_name, redis_server.url)
    async with run_service(settings_a) as a, run_service(settings_b) as b:
        roles = sorted([(await until_ready(a))["role"], (await until_ready(b))["role"]])
        assert roles == ["edge", "watcher"]
        async with (
            EventStream(a.events_url(FLOW, snapshot="false")) as on_a,
            EventStream(b.events_url(FLOW, snapshot="false")) as on_b,
        ):
            for seq in range(20):
                await database.flow_logs.insert_one({"flowId": FLOW, "seq": seq, "chunk": "w"})
            assert await seqs_until(on_a, 19) == list(range(20))
            assert await seqs_until(on_b, 19) == list(range(20))
            cursors = await change_stream_cursors(database)
    if cursors is None:
        print("this backend does not list open cursors in currentOp: the stream count is not checked")
    else:
        assert cursors == 1, f"{cursors} change streams for one deployment"


async def test_a_chunk_published_to_one_process_reaches_the_clients_of_another(
    mongo_backend, database_name, database, redis_server
):
    """POSTed to A, a LOG_STREAM chunk reaches a client of B, filtered, with its id; a client that moves
    to A with that id resumes from the hub's history."""
    publishing = {"event_types": ("LOG_STREAM",)}
    settings_a = hub_settings(mongo_backend, database_name, redis_server.url, publish=publishing)
    settings_b = hub_settings(mongo_backend, database_name, redis_server.url, publish=publishing)
    async with run_service(settings_a) as a, run_service(settings_b) as b, httpx.AsyncClient() as http:
        await until_ready(a)
        await until_ready(b)
        async with EventStream(b.events_url(FLOW, snapshot="false")) as on_b:
            body = {"type": "LOG_STREAM", "data": {"seq": 1, "chunk": "hello ", "_internal": "never sent"}}
            posted = await http.post(f"{a.base_url}/flows/{FLOW}/events", json=body)
            assert posted.status_code == 202, posted.text
            received = await on_b.next(EVENT_TIMEOUT_S)
            await http.post(f"{a.base_url}/flows/{FLOW}/events", json={"type": "LOG_STREAM", "data": {"seq": 2}})
            await database.flow_logs.insert_one({"flowId": FLOW, "seq": 3})
            assert [(await on_b.next(EVENT_TIMEOUT_S)).data["document"]["seq"] for _ in range(2)] == [2, 3]
        assert received.id == posted.json()["id"]
        assert received.data["document"]["chunk"] == "hello " and "_internal" not in received.data["document"]
        async with EventStream(a.events_url(FLOW), headers={"Last-Event-ID": received.id}) as moved:
            assert [(await moved.next(EVENT_TIMEOUT_S)).data["document"]["seq"] for _ in range(2)] == [2, 3]
