"""The Node.js publisher end to end: the built ``@changesync/publisher`` publishes to a real changesync.

The package is compiled from ``clients/publisher/src`` with its locked tsc for every session and laid
out as ``node_modules/@changesync/publisher`` beside a small driver script, which imports it by name
(so the package's ``exports`` are what resolve it). The driver makes the calls it is given in order,
one ``Publisher`` per call, and prints what each returned or threw. The service runs in this process
with JWT authentication; what subscribers receive is read with a real SSE client (``harness.EventStream``).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import npm_cache
import pytest

from harness import Event, EventStream, metric, run_service, service_settings

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPO / "clients" / "publisher"
SECRET = "a-publisher-client-secret-for-hs256!"
FLOW = "flow-publisher"
OTHER_FLOW = "flow-publisher-other"
PUBLISHER_ROLE = "changesync-publisher"
SERVICE_ROLE = "changesync-service"
TSC_TIMEOUT_S = 120
# Bound on one driver run: start Node, make every call (retries and their waits included), print.
DRIVER_TIMEOUT_S = 30
# The first test of a session runs `npm ci` (when the lockfile is new to the cache) and tsc in its set-up.
pytestmark = pytest.mark.timeout(180)

DRIVER = """\
import { PublishError, Publisher } from "@changesync/publisher";

let input = "";
for await (const part of process.stdin) input += part;
const plan = JSON.parse(input);
const results = [];
for (const call of plan.calls) {
  const credentials =
    call.token === null ? {} : call.getToken ? { getToken: async () => call.token } : { token: call.token };
  const publisher = new Publisher({ baseUrl: plan.baseUrl, timeoutMs: 5000, ...credentials, ...call.options });
  const started = performance.now();
  try {
    const published =
      call.type === "LOG_STREAM"
        ? await publisher.logChunk(call.flowId, call.data)
        : await publisher.publish(call.flowId, call.type, call.data);
    results.push({ published, elapsedMs: performance.now() - started });
  } catch (error) {
    if (!(error instanceof PublishError)) throw error;
    const { status = null, detail = null, retryAfterS = null, attempts, retryable, message } = error;
    results.push({ refused: { status, error: error.error, detail, retryAfterS, attempts, retryable, message } });
  }
}
process.stdout.write(JSON.stringify(results));
"""


@dataclass(frozen=True)
class PublisherBuild:
    node: str
    driver: Path


@pytest.fixture(scope="session")
def publisher_build(tmp_path_factory: pytest.TempPathFactory) -> PublisherBuild:
    """The package built from clients/publisher/src, installed beside the driver; skips without node or npm."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("the publisher test needs node and npm on PATH")
    tools = npm_cache.install(PACKAGE_DIR, prefix="publisher", npm=npm, extra_args=("--ignore-scripts",))
    root = tmp_path_factory.mktemp("publisher")
    package = root / "node_modules" / "@changesync" / "publisher"
    package.mkdir(parents=True)
    shutil.copy2(PACKAGE_DIR / "package.json", package / "package.json")
    result = subprocess.run(
        [
            str(tools / "node_modules" / ".bin" / "tsc"),
            "-p",
            str(PACKAGE_DIR / "tsconfig.json"),
            "--outDir",
            str(package / "dist"),
        ],
        capture_output=True,
        text=True,
        timeout=TSC_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"tsc failed:\n{result.stdout}{result.stderr}"
    driver = root / "driver.mjs"
    driver.write_text(DRIVER, encoding="utf-8")
    return PublisherBuild(node, driver)


def token(subject: str = "flow-runner", *, roles: tuple[str, ...] = (PUBLISHER_ROLE,)) -> str:
    claims = {"sub": subject, "exp": int(time.time()) + 300, "roles": list(roles)}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def reader_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {token('reader', roles=(SERVICE_ROLE,))}"}


def chunk(seq: int, **extra: Any) -> dict[str, Any]:
    return {"_id": f"run-1:n1:{seq}", "executionId": "run-1", "nodeId": "n1", "seq": seq, "chunk": f"c{seq} ", **extra}


def call(
    data: dict[str, Any],
    *,
    flow: str = FLOW,
    event_type: str = "LOG_STREAM",
    bearer: str | None = None,
    get_token: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """One call for the driver: ``logChunk`` for LOG_STREAM, else ``publish``; ``options`` go to the Publisher."""
    request = {"flowId": flow, "type": event_type, "data": data}
    return {**request, "token": bearer, "getToken": get_token, "options": options}


async def run_driver(build: PublisherBuild, base_url: str, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs the driver on the calls (in order, each awaited) and returns one result per call."""
    process = await asyncio.create_subprocess_exec(
        build.node,
        str(build.driver),
        cwd=build.driver.parent,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(DRIVER_TIMEOUT_S):
            stdout, stderr = await process.communicate(json.dumps({"baseUrl": base_url, "calls": calls}).encode())
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, f"driver.mjs exited with {process.returncode}:\n{stderr.decode()}"
    results: list[dict[str, Any]] = json.loads(stdout)
    assert len(results) == len(calls)
    return results


@pytest.fixture
async def service(mongo_backend, database_name):
    settings = service_settings(
        mongo_backend.uri,
        database_name,
        auth={"mode": "jwt", "jwt_secret": SECRET},
        publish={"event_types": ("LOG_STREAM",)},
    )
    async with run_service(settings) as running:
        yield running


async def test_published_chunks_reach_the_flows_subscribers_filtered_in_order_once(publisher_build, service):
    """Chunks published one after another reach their flow's subscribers with the route's rules applied,
    in the order published, each once, with the ids the publisher returned; another flow's subscriber
    gets only its own chunk."""
    calls = [call(chunk(seq, _internal="x", secrets={"k": 1}), bearer=token(), get_token=True) for seq in range(20)]
    calls.append(call(chunk(0), flow=OTHER_FLOW, bearer=token()))
    calls.append(call(chunk(99), bearer=token()))  # the end marker
    async with (
        EventStream(service.events_url(FLOW, snapshot="false"), headers=reader_headers()) as stream,
        EventStream(service.events_url(OTHER_FLOW, snapshot="false"), headers=reader_headers()) as other,
    ):
        results = await run_driver(publisher_build, service.base_url, calls)
        assert all("published" in result for result in results), results
        received: list[Event] = []
        while not received or received[-1].data["document"]["seq"] != 99:
            received.append(await stream.next())
        elsewhere = await other.next()

    ids = [result["published"]["id"] for result in results]
    assert [event.data["document"]["seq"] for event in received] == [*range(20), 99], "missing, repeated or reordered"
    assert [event.id for event in received] == ids[:20] + ids[21:]
    assert all(result["published"]["flowId"] == FLOW for result in results[:20])
    for event in received:
        assert event.event == "LOG_STREAM" and event.data["collection"] == "flow_logs"
        assert event.data["operation"] == "insert" and event.data["flowId"] == FLOW
        document = event.data["document"]
        assert "_internal" not in document and "secrets" not in document, "the route's rules were not applied"
        assert document["flowId"] == FLOW and document["_id"] == f"run-1:n1:{document['seq']}"
        assert event.data["documentId"] == document["_id"], "the publisher's own _id is the document id"
    assert elsewhere.id == ids[20] and elsewhere.data["flowId"] == OTHER_FLOW
    assert elsewhere.data["document"]["seq"] == 0
    assert await metric(service, "changesync_published_total", type="LOG_STREAM") == len(calls)


async def test_refusals_are_publish_errors_and_reach_no_one(publisher_build, service):
    """A wrong role is a PublishError 403, no token a 401, an unknown type a 400, a private chunk a 422:
    each with the service's error and detail, made once (not retried), and delivered to no subscriber."""
    calls = [
        call(chunk(1), bearer=token("reader", roles=(SERVICE_ROLE,))),
        call(chunk(2)),
        call({"note": "x"}, event_type="NOPE", bearer=token()),
        call(chunk(3, visibility="private"), bearer=token()),
        call(chunk(99), bearer=token()),  # the marker
    ]
    async with EventStream(service.events_url(FLOW, snapshot="false"), headers=reader_headers()) as stream:
        *refusals, marker = await run_driver(publisher_build, service.base_url, calls)
        first = await stream.next()
    assert "published" in marker and first.id == marker["published"]["id"], "a refused event reached a subscriber"

    errors = [result["refused"] for result in refusals]
    forbidden, unauthorized, unknown, private = errors
    assert (forbidden["status"], forbidden["error"]) == (403, "forbidden")
    assert forbidden["detail"] == f"publishing needs a token with the role {PUBLISHER_ROLE!r}"
    assert (unauthorized["status"], unauthorized["error"]) == (401, "unauthorized")
    assert (unknown["status"], unknown["error"]) == (400, "unknown-type")
    assert unknown["detail"] == "type must be one of: LOG_STREAM"
    assert (private["status"], private["error"]) == (422, "dropped")
    for refused in errors:
        assert refused["attempts"] == 1 and refused["retryable"] is False and refused["retryAfterS"] is None
        assert f"refused the event after 1 attempt: {refused['status']} {refused['error']}" in refused["message"]
    for reason in ("forbidden", "unauthorized", "unknown-type", "dropped"):
        assert await metric(service, "changesync_publish_refused_total", reason=reason) == 1, reason


async def test_publishing_off_is_a_405_publish_error(publisher_build, mongo_backend, database_name):
    """Without publish.event_types the service answers 405, and the error's detail names the setting."""
    settings = service_settings(mongo_backend.uri, database_name, auth={"mode": "jwt", "jwt_secret": SECRET})
    async with run_service(settings) as running:
        (result,) = await run_driver(publisher_build, running.base_url, [call(chunk(1), bearer=token())])
    refused = result["refused"]
    assert (refused["status"], refused["error"], refused["attempts"]) == (405, "Method Not Allowed", 1)
    assert "publish.event_types" in refused["detail"]


async def test_too_fast_is_retried_after_retry_after_or_reported_with_it(publisher_build, mongo_backend, database_name):
    """Past the subject's rate the service answers 429 with Retry-After: 1; the publisher waits that long
    and the event goes through, delivered once and in order; with retries: 0 the PublishError carries it."""
    settings = service_settings(
        mongo_backend.uri,
        database_name,
        auth={"mode": "jwt", "jwt_secret": SECRET},
        publish={"event_types": ("LOG_STREAM",), "rate_per_s": 2.0},
    )
    async with run_service(settings) as running:
        patient = [call(chunk(seq), bearer=token("patient")) for seq in range(4)]
        hasty = [call(chunk(seq), bearer=token("hasty"), retries=0) for seq in range(10, 13)]
        async with EventStream(running.events_url(FLOW, snapshot="false"), headers=reader_headers()) as stream:
            results = await run_driver(publisher_build, running.base_url, patient + hasty)
            outcomes = ["published" if "published" in result else result["refused"]["status"] for result in results]
            assert outcomes == ["published"] * 6 + [429], results
            received = [await stream.next() for _ in range(6)]
            marker = await run_driver(publisher_build, running.base_url, [call(chunk(99), bearer=token())])
            assert (await stream.next()).id == marker[0]["published"]["id"], "more events than were accepted"
        too_fast = await metric(running, "changesync_publish_refused_total", reason="too-fast")

    assert results[2]["elapsedMs"] >= 900, "the third event was retried before Retry-After"
    refused = results[6]["refused"]
    assert (refused["status"], refused["error"], refused["detail"]) == (429, "too many events", "at most 2/s")
    assert refused["retryAfterS"] == 1 and refused["attempts"] == 1 and refused["retryable"] is True
    assert [event.data["document"]["seq"] for event in received] == [0, 1, 2, 3, 10, 11]
    assert [event.id for event in received] == [result["published"]["id"] for result in results[:6]]
    assert too_fast == 2, "one 429 retried for the patient subject, one reported for the hasty one"
