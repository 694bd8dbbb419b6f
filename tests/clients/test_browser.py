"""The browser client end to end: headless Chromium runs the built ES module against a real changesync.

A page on its own origin (a tiny HTTP server on 127.0.0.1, which also mints the JWTs, as the NestJS
back end would) follows one flow with ``FlowEvents`` in token mode; changesync runs with JWT
authentication on and CORS allowing that origin. A PyMongo writer edits the flow, and the page's state
must equal the filtered documents in MongoDB. Then the service is SIGKILLed and restarted on the same
port while the writer goes on: the page catches up with no reload, no gap, no duplicate and no second
SNAPSHOT.

Chromium is driven through Playwright (``playwright-core`` from npm, ``tests/clients/browser/driver.mjs``).
The client's npm dependencies are installed once per lockfile into the user cache directory; the client
is compiled from ``clients/typescript/src`` for every session, so the test always runs the current source.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import http.server
import json
import shutil
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import jwt
import npm_cache
import pytest
from bson import ObjectId

from changesync.check import run_check
from harness import ServiceProcess, service_settings

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
CLIENT_DIR = REPO / "clients" / "typescript"
PAGE_DIR = Path(__file__).parent / "browser"
SECRET = "browser-test-secret-at-least-32-bytes"
SUBJECT = "alice"
FLOW = "flow-browser"
TSC_TIMEOUT_S = 120
# Bound on every wait for the page (and for the whole restart scenario).
PAGE_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.02
# The writer's pace: a pause between writes, never used to wait for an outcome.
WRITE_INTERVAL_S = 0.01
FAST_STREAM = {"CHANGESYNC_STREAM_MAX_AWAIT_TIME_MS": "200"}


# --- the client, built, and its npm tools --------------------------------------------------------


@dataclass(frozen=True)
class ClientBuild:
    node: str
    node_modules: Path
    dist: Path


def _install_node_modules(npm: str) -> Path:
    """The client's locked dev dependencies (tsc, playwright-core), from the shared npm cache."""
    return npm_cache.install(CLIENT_DIR, prefix="client", npm=npm, extra_args=("--ignore-scripts",)) / "node_modules"


@pytest.fixture(scope="session")
def client_build(tmp_path_factory: pytest.TempPathFactory) -> ClientBuild:
    """The client compiled from clients/typescript/src with its locked tsc; skips without Chromium or npm."""
    if not CHROMIUM.is_file():
        pytest.skip(f"the browser test needs {CHROMIUM} (apt-get install chromium)")
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("the browser test needs node and npm on PATH")
    node_modules = _install_node_modules(npm)
    dist = tmp_path_factory.mktemp("client") / "dist"
    result = subprocess.run(
        [str(node_modules / ".bin" / "tsc"), "-p", str(CLIENT_DIR / "tsconfig.json"), "--outDir", str(dist)],
        capture_output=True,
        text=True,
        timeout=TSC_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"tsc failed:\n{result.stdout}{result.stderr}"
    return ClientBuild(node, node_modules, dist)


# --- the page's origin: static files and the token endpoint ---------------------------------------


class PageServer:
    """Serves the test page, the built client under /dist/, and GET /token (a fresh 5-minute JWT) on 127.0.0.1."""

    TYPES: ClassVar[dict[str, str]] = {
        ".html": "text/html; charset=utf-8",
        ".js": "text/javascript",
        ".map": "application/json",
    }

    def __init__(self, dist: Path) -> None:
        self.dist = dist
        self.tokens_minted = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/token":
                    server.tokens_minted += 1
                    claims = {"sub": SUBJECT, "roles": ["editor"], "exp": int(time.time()) + 300}
                    self._send(200, "text/plain", jwt.encode(claims, SECRET, algorithm="HS256").encode())
                    return
                file = PAGE_DIR / "index.html" if path in ("/", "/index.html") else None
                if path.startswith("/dist/"):
                    candidate = (server.dist / path.removeprefix("/dist/")).resolve()
                    file = candidate if candidate.is_relative_to(server.dist.resolve()) else None
                if file is None or not file.is_file():
                    self._send(404, "text/plain", b"not found")
                    return
                self._send(200, PageServer.TYPES.get(file.suffix, "application/octet-stream"), file.read_bytes())

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="page-server", daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> PageServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


# --- the browser --------------------------------------------------------------------------------


class Browser:
    """Headless Chromium behind driver.mjs: ``goto`` and ``evaluate`` over JSON lines."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.console: list[str] = []
        self.version = ""
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, build: ClientBuild, user_data_dir: Path) -> AsyncIterator[Browser]:
        process = await asyncio.create_subprocess_exec(
            build.node,
            str(PAGE_DIR / "driver.mjs"),
            str(build.node_modules),
            str(CHROMIUM),
            str(user_data_dir),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        browser = cls(process)
        try:
            async with asyncio.timeout(PAGE_TIMEOUT_S):
                await browser._ready
            yield browser
        finally:
            await browser.close()

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            message = json.loads(line)
            if "id" in message:
                future = self._pending.pop(message["id"])
                if "error" in message:
                    future.set_exception(RuntimeError(message["error"]))
                else:
                    future.set_result(message["result"])
            elif message.get("event") == "ready":
                self.version = message["version"]
                self._ready.set_result(None)
            else:
                self.console.append(f"{message.get('event')}: {message.get('text')}")
        error = RuntimeError(f"driver.mjs exited: {await self._stderr()}")
        for future in [self._ready, *self._pending.values()]:
            if not future.done():
                future.set_exception(error)

    async def _stderr(self) -> str:
        assert self.process.stderr is not None
        return (await self.process.stderr.read()).decode(errors="replace")[-2000:]

    async def call(self, method: str, **params: Any) -> Any:
        assert self.process.stdin is not None
        self._next_id += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = future
        self.process.stdin.write((json.dumps({"id": self._next_id, "method": method, **params}) + "\n").encode())
        await self.process.stdin.drain()
        async with asyncio.timeout(PAGE_TIMEOUT_S):
            return await future

    async def evaluate(self, expression: str) -> Any:
        return await self.call("evaluate", expression=expression)

    async def close(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                await self.call("close")
            try:
                async with asyncio.timeout(10):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


# --- what the page must hold ------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """The JSON the service sends for a document of these tests (ObjectId → hex string)."""
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def visible(document: dict[str, Any]) -> dict[str, Any]:
    """The default rules: no `secrets`, no `data.credentials` (also in board nodes), no `_` fields but `_id`."""

    def strip(node: Any, top: bool) -> Any:
        if isinstance(node, list):
            return [strip(item, False) for item in node]
        if not isinstance(node, dict):
            return node
        return {
            key: strip(value, False)
            for key, value in node.items()
            if not (key.startswith("_") and not (top and key == "_id"))
        }

    result = strip(plain(copy.deepcopy(document)), True)
    result.pop("secrets", None)
    for holder in [result, *(result.get("nodes") or [])]:
        if isinstance(holder, dict) and isinstance(holder.get("data"), dict):
            holder["data"].pop("credentials", None)
    return result


async def expected_state(database: Any) -> dict[str, Any]:
    """The flow's documents and log chunks as the page must hold them, read from MongoDB."""
    collections: dict[str, dict[str, Any]] = {}
    board = await database.flowboards.find_one({"_id": FLOW})
    collections["flowboards"] = {} if board is None else {FLOW: visible(board)}
    for name in ("flow_nodes", "flow_edges", "flow_executions"):
        documents = await database[name].find({"flowId": FLOW}).to_list()
        collections[name] = {
            str(document["_id"]): visible(document) for document in documents if document.get("visibility") != "private"
        }
    logs: dict[str, dict[str, list[Any]]] = {}
    for chunk in await database.flow_logs.find({"flowId": FLOW}).sort("seq", 1).to_list():
        logs.setdefault(chunk["executionId"], {}).setdefault(chunk["nodeId"], []).append(visible(chunk))
    return {"collections": collections, "logs": logs}


def difference(page: dict[str, Any], expected: dict[str, Any]) -> str:
    lines = []
    for part in ("collections", "logs"):
        for name in sorted(set(page[part]) | set(expected[part])):
            have, want = page[part].get(name), expected[part].get(name)
            if have != want:
                page_text, mongodb_text = json.dumps(have)[:600], json.dumps(want)[:600]
                lines.append(f"{part}.{name}:\n  page:    {page_text}\n  mongodb: {mongodb_text}")
    return "\n".join(lines)


@dataclass
class Page:
    browser: Browser

    async def report(self) -> dict[str, Any]:
        report: dict[str, Any] = await self.browser.evaluate("window.__report()")
        return report

    async def until(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while True:
            report = await self.report()
            if predicate(report):
                return report
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {PAGE_TIMEOUT_S:g} s waiting for {what}; page record: {report['record']}; "
                    f"console: {self.browser.console[-10:]}"
                )
            await asyncio.sleep(POLL_INTERVAL_S)

    async def until_matches(self, database: Any, what: str) -> dict[str, Any]:
        """Waits until the page's state equals MongoDB's filtered documents (re-read on every poll)."""
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while True:
            report = await self.report()
            expected = await expected_state(database)
            state = report["state"]
            if {"collections": state["collections"], "logs": state["logs"]} == expected:
                return report
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what}: the page still differs from MongoDB after {PAGE_TIMEOUT_S:g} s:\n"
                    f"{difference(state, expected)}\nrecord: {report['record']}\nconsole: {self.browser.console[-10:]}"
                )
            await asyncio.sleep(POLL_INTERVAL_S)


# --- the scenario -----------------------------------------------------------------------------------


def board_document() -> dict[str, Any]:
    return {
        "_id": FLOW,
        "name": "Browser flow",
        "ownerId": SUBJECT,
        "members": [],
        "nodes": [
            {"id": "n0", "position": {"x": 0, "y": 0}, "data": {"label": "Start", "credentials": {"apiKey": "sk"}}},
            {"id": "n1", "position": {"x": 100, "y": 0}, "data": {"label": "LLM"}},
        ],
        "edges": [{"id": "e0", "source": "n0", "target": "n1"}],
        "viewport": {"x": 0, "y": 0, "zoom": 1},
        "secrets": {"token": "never-sent"},
        "__v": 0,
    }


# What the page's `canvas` events must say after these edits of the board (ids of nodes).
CANVAS_CHANGES = {
    "$set nested": {"added": [], "changed": ["n1"], "removed": []},
    "$push": {"added": ["n2"], "changed": [], "removed": []},
    "$pull": {"added": [], "changed": [], "removed": ["n0"]},
}


# A real Chromium starts, loads the page, and follows writes through a service restart (~20 s here
# per mode; its set-up builds the client bundle on first use).
@pytest.mark.timeout(240)
@pytest.mark.parametrize("updates", ["patch", "full"])
async def test_page_state_follows_mongodb_through_a_service_restart(
    client_build, mongo_backend, database_name, database, tmp_path, updates
):
    """The page's state equals MongoDB's filtered documents after each kind of edit, and again after a
    SIGKILL and restart under continuous writes: same page load, one SNAPSHOT, no RESYNC, no gap; with
    patch-only updates (the client's default) and with full documents, each edit's nodes named."""
    report = await run_check(service_settings(mongo_backend.uri, database_name), fix=True)
    assert not report.failed, report.render()
    await database.flowboards.insert_one(board_document())
    kept = await database.flow_nodes.insert_one({"flowId": FLOW, "kind": "http", "data": {"url": "https://x"}})
    doomed = await database.flow_nodes.insert_one({"flowId": FLOW, "kind": "llm", "data": {"credentials": "k"}})
    await database.flow_nodes.insert_one({"flowId": FLOW, "kind": "draft", "visibility": "private"})
    await database.flow_edges.insert_one({"flowId": FLOW, "source": "n0", "target": "n1"})
    first_run = await database.flow_executions.insert_one({"flowId": FLOW, "run": 1, "status": "done", "nodes": {}})
    figures: dict[str, Any] = {}

    with PageServer(client_build.dist) as pages:
        environ = {
            **FAST_STREAM,
            "CHANGESYNC_AUTH_MODE": "jwt",
            "CHANGESYNC_AUTH_JWT_SECRET": SECRET,
            "CHANGESYNC_CORS_ALLOW_ORIGINS": pages.origin,
        }
        service = ServiceProcess(mongo_backend.uri, database_name, environ=dict(environ))
        services = [service]
        try:
            await service.start()
            async with Browser.launch(client_build, tmp_path / "chromium-profile") as browser:
                page = Page(browser)
                opened = time.monotonic()
                url = f"{pages.origin}/?base={service.base_url}&flow={FLOW}&updates={updates}"
                await browser.call("goto", url=url)
                first = await page.until(
                    lambda r: r["state"]["loaded"] and r["state"]["status"] == "live", "the first SNAPSHOT"
                )
                figures["first SNAPSHOT after navigation (s)"] = round(time.monotonic() - opened, 3)
                loaded_at = first["loadedAt"]
                await page.until_matches(database, "after the SNAPSHOT")
                board = first["state"]["collections"]["flowboards"][FLOW]
                assert "secrets" not in board and "__v" not in board and "credentials" not in board["nodes"][0]["data"]
                assert len(first["state"]["collections"]["flow_nodes"]) == 2, "the private node is never sent"

                # 1. One edit of each kind; the page must match MongoDB after each.
                run_id = ObjectId()
                edits = canvas_edits(database, kept.inserted_id, doomed.inserted_id, first_run.inserted_id, run_id)
                latencies_ms = []
                for name, edit in edits:
                    before = (await page.report())["record"]["states"]
                    written_at = time.time()
                    await edit()
                    after = await page.until_matches(database, f"after {name}")
                    if after["record"]["states"] > before:  # "$set denied only" sends nothing
                        latencies_ms.append(after["record"]["lastStateAt"] - written_at * 1000)
                    if name in CANVAS_CHANGES:
                        change = after["record"]["canvas"][-1]
                        assert (change["collection"], change["nodes"]) == ("flowboards", CANVAS_CHANGES[name]), name
                figures["edit → page state latency, median / max (ms)"] = (
                    round(statistics.median(latencies_ms)),
                    round(max(latencies_ms)),
                )
                assert len(latencies_ms) == len(edits) - 1, "exactly the denied-only edit sends no event"

                # 2. SIGKILL and restart on the same port while a writer goes on.
                writer = Writer(database, str(run_id))
                writing = asyncio.create_task(writer.run())
                try:
                    live = await page.until(
                        lambda r: writer.count >= 20 and chunks(r, str(run_id)) >= 15, "live chunks"
                    )
                    lives = live["record"]["statuses"].count("live")
                    service.signal(signal.SIGKILL)
                    killed = time.monotonic()
                    await service.wait()
                    written_before_kill = writer.count
                    await writer.until(lambda: writer.count >= written_before_kill + 30, "30 writes while down")
                    service = ServiceProcess(mongo_backend.uri, database_name, port=service.port, environ=dict(environ))
                    services.append(service)
                    await service.start()
                    ready = time.monotonic()
                    written_while_down = writer.count - written_before_kill
                    await page.until(lambda r: r["record"]["statuses"].count("live") > lives, "the page to reconnect")
                    reconnected = time.monotonic()
                    await writer.until(lambda: writer.count >= written_before_kill + written_while_down + 30, "30 more")
                finally:
                    writer.stop()
                    await writing
                final = await page.until_matches(database, "after the restart")
                caught_up = time.monotonic()
                figures["restart: killed → ready (s)"] = round(ready - killed, 3)
                figures["restart: ready → page live again (s)"] = round(reconnected - ready, 3)
                figures["restart: ready → page equal to MongoDB (s)"] = round(caught_up - ready, 3)
                figures["writes: while down / in all"] = (written_while_down, writer.count)
                record = final["record"]
                figures["page: statuses"] = record["statuses"]
                figures["page: tokens fetched / minted"] = (record["tokens"], pages.tokens_minted)
                figures["browser"] = browser.version

                assert final["loadedAt"] == loaded_at, "the page was reloaded"
                if updates == "patch":
                    assert record["patchOnly"] > 0, "no update came as a patch alone"
                else:
                    assert record["patchOnly"] == 0, "a full-mode page was sent a patch alone"
                figures["page: patch-only updates"] = record["patchOnly"]
                assert record["snapshots"] == 1, "the page needed a second SNAPSHOT: it lost its position"
                assert record["resyncs"] == [], f"the page was told to resync: {record['resyncs']}"
                seqs = [chunk["seq"] for chunk in final["state"]["logs"][str(run_id)]["n0"]]
                assert seqs == list(range(writer.count)), "log chunks missing, duplicated or out of order"
                assert record["tokens"] >= 2 and record["tokens"] == pages.tokens_minted
                retried = ("network:", "server:")  # the restart: refused, then 503 until the change stream opens
                assert [e for e in record["errors"] if not e.startswith(retried)] == [], record["errors"]
                assert not [line for line in browser.console if line.startswith("pageerror")], browser.console
        finally:
            for process in services:
                await process.stop()
    print("\nbrowser end-to-end figures:")
    for name, value in figures.items():
        print(f"  {name}: {value}")


def canvas_edits(
    database: Any, kept: ObjectId, doomed: ObjectId, first_run: ObjectId, run_id: ObjectId
) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
    """One write of each kind the page must follow, by name."""
    boards, nodes, runs = database.flowboards, database.flow_nodes, database.flow_executions
    board = {"_id": FLOW}
    new_node = {"id": "n2", "data": {"label": "New", "credentials": {"k": 1}}}
    run = {"_id": run_id, "flowId": FLOW, "run": 2, "status": "running", "nodes": {}}

    def chunk(seq: int, text: str) -> dict[str, Any]:
        return {"flowId": FLOW, "executionId": str(run_id), "nodeId": "n1", "seq": seq, "chunk": text}

    return [
        ("$set nested", lambda: boards.update_one(board, {"$set": {"nodes.1.position.x": 250}})),
        ("$push", lambda: boards.update_one(board, {"$push": {"nodes": new_node}})),
        ("$pull", lambda: boards.update_one(board, {"$pull": {"nodes": {"id": "n0"}}})),
        ("$unset", lambda: boards.update_one(board, {"$unset": {"viewport.zoom": ""}})),
        ("$set denied only", lambda: boards.update_one(board, {"$set": {"secrets.token": "t2"}})),
        ("insert node", lambda: nodes.insert_one({"flowId": FLOW, "kind": "code", "data": {"src": "1"}})),
        ("$set + $inc node", lambda: nodes.update_one({"_id": kept}, {"$set": {"data.url": "y"}, "$inc": {"rev": 1}})),
        ("node goes private", lambda: nodes.update_one({"_id": doomed}, {"$set": {"visibility": "private"}})),
        ("delete node", lambda: nodes.delete_one({"_id": kept})),
        ("replace edge", lambda: database.flow_edges.replace_one({"flowId": FLOW}, {"flowId": FLOW, "source": "n1"})),
        ("run starts", lambda: runs.insert_one(run)),
        ("run node state", lambda: runs.update_one({"_id": run_id}, {"$set": {"nodes.n1": {"status": "running"}}})),
        ("log chunk", lambda: database.flow_logs.insert_one(chunk(0, "Hel"))),
        ("log chunk", lambda: database.flow_logs.insert_one(chunk(1, "lo"))),
        ("delete old run", lambda: runs.delete_one({"_id": first_run})),
    ]


def chunks(report: dict[str, Any], execution_id: str) -> int:
    return len(report["state"]["logs"].get(execution_id, {}).get("n0", []))


class Writer:
    """Log chunks (seq 0, 1, …) for node n0 of one run, with a canvas edit every fifth write."""

    def __init__(self, database: Any, execution_id: str) -> None:
        self.database = database
        self.execution_id = execution_id
        self.count = 0
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        while not self._stopped.is_set():
            seq = self.count
            await self.database.flow_logs.insert_one(
                {"flowId": FLOW, "executionId": self.execution_id, "nodeId": "n0", "seq": seq, "chunk": f"c{seq} "}
            )
            if seq % 5 == 0:
                await self.database.flowboards.update_one({"_id": FLOW}, {"$set": {"nodes.0.position.y": seq}})
            if seq % 7 == 0:
                code_node = {"flowId": FLOW, "kind": "code"}
                await self.database.flow_nodes.update_one(code_node, {"$set": {"data.src": f"v{seq}"}})
            self.count = seq + 1
            await asyncio.sleep(WRITE_INTERVAL_S)

    def stop(self) -> None:
        self._stopped.set()

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(POLL_INTERVAL_S)


# --- local edits: no rubber-banding -------------------------------------------------------------

# The back end writes each move this many moves behind the drag (cycling), as a slow API would.
ECHO_LAGS = (3, 4, 5)
DRAG_MOVES = 30
# Records node n1's x in the page's state after every state change (evaluates to true: a result must be JSON).
WATCH_N1 = f"""(() => {{
  window.__xs = [];
  window.__flow.on("state", (state) => {{
    const node = state.collections.flowboards?.[{json.dumps(FLOW)}]?.nodes?.find((item) => item.id === "n1");
    window.__xs.push(node?.position?.x ?? null);
  }});
  return true;
}})()"""


def move_n1(x: int) -> str:
    """The page's local edit of one drag move, n1 (the board's node 1) to `x`; evaluates to its mutation id."""
    patch = [{"op": "replace", "path": "/nodes/1/position/x", "value": x}]
    edit = {"collection": "flowboards", "documentId": FLOW, "patch": patch}
    return f"window.__flow.applyLocal({json.dumps(edit)})"


@contextlib.asynccontextmanager
async def page_of_flow(
    client_build: ClientBuild, mongo_backend: Any, database_name: str, profile: Path, flow: str, **environ: str
) -> AsyncIterator[tuple[Browser, Page]]:
    """A service with JWT authentication on, and Chromium on the test page following ``flow``."""
    with PageServer(client_build.dist) as pages:
        environ = {
            **environ,
            "CHANGESYNC_AUTH_MODE": "jwt",
            "CHANGESYNC_AUTH_JWT_SECRET": SECRET,
            "CHANGESYNC_CORS_ALLOW_ORIGINS": pages.origin,
        }
        service = ServiceProcess(mongo_backend.uri, database_name, environ=environ)
        try:
            await service.start()
            async with Browser.launch(client_build, profile) as browser:
                await browser.call("goto", url=f"{pages.origin}/?base={service.base_url}&flow={flow}")
                yield browser, Page(browser)
        finally:
            await service.stop()


@pytest.mark.timeout(120)
async def test_local_drag_never_jumps_back_while_echoes_lag(
    client_build, mongo_backend, database_name, database, tmp_path
):
    """The page drags a node with 30 local edits (applyLocal) while the writes reach MongoDB 3 to 5
    moves late, stamped with each edit's mutation id, and another writer renames the node: the x the
    page shows never goes back, ends where the user left it, and every edit is settled by its echo."""
    report = await run_check(service_settings(mongo_backend.uri, database_name), fix=True)
    assert not report.failed, report.render()
    await database.flowboards.insert_one(board_document())
    profile = tmp_path / "chromium-profile"
    async with page_of_flow(client_build, mongo_backend, database_name, profile, FLOW, **FAST_STREAM) as (
        browser,
        page,
    ):
        await page.until(lambda r: r["state"]["loaded"] and r["state"]["status"] == "live", "the SNAPSHOT")
        await browser.evaluate(WATCH_N1)

        async def write(move: int, mutation_id: str) -> None:
            update = {"$set": {"nodes.1.position.x": 100 + 10 * move, "meta.mutationId": mutation_id}}
            await database.flowboards.update_one({"_id": FLOW}, update)

        ids: list[str] = []
        written = 0
        for move in range(1, DRAG_MOVES + 1):
            ids.append(await browser.evaluate(move_n1(100 + 10 * move)))
            while written < move - ECHO_LAGS[move % len(ECHO_LAGS)]:
                await write(written + 1, ids[written])
                written += 1
                if written == 10:  # another writer, another field, no mutation id
                    await database.flowboards.update_one({"_id": FLOW}, {"$set": {"nodes.1.data.label": "Renamed"}})
        pending_after_drag = (await page.report())["state"]["pendingWrites"]
        while written < DRAG_MOVES:
            await write(written + 1, ids[written])
            written += 1
        final_x = 100 + 10 * DRAG_MOVES
        done = await page.until(
            lambda r: (
                r["state"]["pendingWrites"] == 0
                and r["state"]["collections"]["flowboards"][FLOW]["nodes"][1]["data"]["label"] == "Renamed"
            ),
            "every local edit settled by its echo, and the rename shown",
        )
        xs = [x for x in await browser.evaluate("window.__xs") if x is not None]

    assert len(set(ids)) == DRAG_MOVES
    assert pending_after_drag > 0, "the echoes were not late: nothing was pending when the drag ended"
    backwards = [(i, xs[i - 1], xs[i]) for i in range(1, len(xs)) if xs[i] < xs[i - 1]]
    assert backwards == [], f"the node jumped back (index, before, after): {backwards}; all: {xs}"
    board = done["state"]["collections"]["flowboards"][FLOW]
    assert xs[-1] == board["nodes"][1]["position"]["x"] == final_x, "not where the user left it"
    stored = await database.flowboards.find_one({"_id": FLOW})
    assert stored is not None and stored["nodes"][1]["position"]["x"] == final_x
    assert "mutationId" not in (board.get("meta") or {}), "the service must strip the mutation id"
    errors = done["record"]["errors"]
    assert not [e for e in errors if e.startswith(("conflict:", "pending-timeout:"))], errors
    assert not [line for line in browser.console if line.startswith("pageerror")], browser.console


@pytest.mark.timeout(120)
async def test_a_forbidden_flow_stops_the_page_instead_of_retrying(
    client_build, mongo_backend, database_name, database, tmp_path
):
    """A flow the subject may not read: the EventSource only sees a failure, the client's probe reads
    the 403 across origins (CORS answers errors too), and the page stops at "closed" with `forbidden`."""
    report = await run_check(service_settings(mongo_backend.uri, database_name), fix=True)
    assert not report.failed, report.render()
    await database.flowboards.insert_one({**board_document(), "_id": "not-alices", "ownerId": "bob"})
    profile = tmp_path / "chromium-profile"
    async with page_of_flow(client_build, mongo_backend, database_name, profile, "not-alices") as (_, page):
        stopped = await page.until(lambda r: r["state"]["status"] == "closed", "the page to stop")
    record = stopped["record"]
    assert record["errors"] == ["forbidden: this subject may not read the flow (403)"], record["errors"]
    assert record["statuses"] == ["closed"], "no retry, no second attempt in between"
    assert record["tokens"] == 1, "one attempt, one token"
