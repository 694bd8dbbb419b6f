"""The live demo page (``GET /demo/``): served by changesync itself under a CSP of its own, off by
default in ``serve``, on in ``changesync demo``; its copy of the browser client is current; and in
headless Chromium it draws the demo flow live while the demo writer works.

The browser test drives ``/usr/bin/chromium`` through Playwright (``tests/clients/browser/driver.mjs``,
as ``test_browser.py`` does) and skips without it, or without node and npm. It writes a screenshot of
the page and prints where.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import html.parser
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import npm_cache
import pytest

from changesync.app import create_app
from changesync.demo import banner, with_demo_auth, write_forever
from changesync.demo_page import PAGE_CSP, PAGE_DIR, page_assets
from changesync.settings import load_settings
from changesync.web import SECURITY_HEADERS
from harness import free_port, run_service, service_settings

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
CLIENT_DIR = REPO / "clients" / "typescript"
DRIVER = Path(__file__).parent / "browser" / "driver.mjs"
SECRET = "demo-page-test-secret-of-32-bytes!"
TSC_TIMEOUT_S = 120
# Bound on each wait for the page, and on the demo command's start-up.
PAGE_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.05
# The writer's pace in the browser test: a run of three nodes takes about a second, so the node and
# edge that every third run adds show up within seconds.
FAST_STEP_S = 0.1
JS = "text/javascript; charset=utf-8"
OTHER_SECURITY_HEADERS = {
    name.decode(): value.decode() for name, value in SECURITY_HEADERS if name != b"content-security-policy"
}


def page_app(**overrides: Any) -> httpx.AsyncClient:
    """A client of the app (no lifespan: the page needs no database), JWT authentication on."""
    settings = service_settings(
        "mongodb://127.0.0.1:1/", "unused", auth={"mode": "jwt", "jwt_secret": SECRET}, **overrides
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(settings)), base_url="http://testserver")


# --- over HTTP ------------------------------------------------------------------------------------


class TestServing:
    async def test_off_by_default(self):
        """`serve` serves no page unless `demo_page` is on: /demo/ and its files are 404."""
        assert load_settings(environ={}).demo_page is False
        async with page_app() as client:
            for path in ("/demo/", "/demo/demo.js", "/demo/client/index.js"):
                assert (await client.get(path)).status_code == 404, path

    def test_the_setting_turns_it_on(self, tmp_path):
        """CHANGESYNC_DEMO_PAGE=true, or `demo_page = true` in the file, turns the page on."""
        assert load_settings(environ={"CHANGESYNC_DEMO_PAGE": "true"}).demo_page is True
        config = tmp_path / "changesync.toml"
        config.write_text("demo_page = true\n", encoding="utf-8")
        assert load_settings(config, environ={}).demo_page is True

    async def test_the_page_has_its_own_csp_and_every_other_header(self):
        """GET /demo/ is HTML under the page's CSP alone (not the service's `default-src 'none'` as well),
        with every other security header."""
        async with page_app(demo_page=True) as client:
            response = await client.get("/demo/")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.headers.get_list("content-security-policy") == [PAGE_CSP]
        assert "'unsafe-inline'" not in PAGE_CSP and "'unsafe-eval'" not in PAGE_CSP
        for directive in ("default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"):
            assert directive in PAGE_CSP
        for name, value in OTHER_SECURITY_HEADERS.items():
            assert response.headers.get_list(name) == [value], name
        assert response.content == (PAGE_DIR / "index.html").read_bytes()

    async def test_other_responses_keep_the_service_csp(self):
        """Only the page's files carry the page's CSP: a 404 under /demo/ and the API keep `default-src 'none'`."""
        async with page_app(demo_page=True) as client:
            for path in ("/demo/missing.js", "/healthz", "/schema/events.json"):
                response = await client.get(path)
                assert response.headers.get_list("content-security-policy") == [
                    "default-src 'none'; frame-ancestors 'none'"
                ], path

    @pytest.mark.parametrize(
        ("path", "media_type"),
        [
            ("demo.js", JS),
            ("style.css", "text/css; charset=utf-8"),
            ("favicon.svg", "image/svg+xml"),
            ("client/index.js", JS),
            ("client/flow-events.js", JS),
            ("client/state.js", JS),
            ("client/json-patch.js", JS),
        ],
    )
    async def test_assets(self, path, media_type):
        """The page's script, style, icon and the client's modules are served from the package with their types."""
        async with page_app(demo_page=True) as client:
            response = await client.get(f"/demo/{path}")
        assert response.status_code == 200
        assert response.headers["content-type"] == media_type
        assert response.headers["cache-control"] == "no-cache"
        assert response.content == (PAGE_DIR / path).read_bytes()

    async def test_without_the_slash_it_redirects(self):
        """/demo answers a redirect to /demo/, so that the page's relative URLs resolve."""
        async with page_app(demo_page=True) as client:
            response = await client.get("/demo")
        assert response.status_code in (307, 308)
        assert response.headers["location"].endswith("/demo/")

    @pytest.mark.parametrize(
        "path",
        [
            "/demo/%2e%2e/app.py",
            "/demo/..%2fsettings.py",
            "/demo/client/%2e%2e/%2e%2e/web.py",
            "/demo/%2e%2e%2f%2e%2e%2fpyproject.toml",
            "/demo/%2fetc%2fpasswd",
            "/demo//etc/passwd",
            "/demo/__init__.py",
            "/demo/client",
            "/demo/client/",
            "/demo/index.html%00.js",
            "/demo/%2e/demo.js",
        ],
    )
    async def test_refuses_anything_but_its_files(self, path):
        """A path that is not one of the page's files, traversal included, is a JSON 404."""
        async with page_app(demo_page=True) as client:
            response = await client.get(path)
        assert response.status_code == 404, response.text[:200]
        assert response.json() == {"error": "Not Found"}

    def test_the_served_files_are_a_fixed_table(self):
        """Request paths are looked up in a table made at start-up: the page's own files, no Python."""
        assets = page_assets()
        assert {"", "index.html", "demo.js", "style.css", "favicon.svg", "client/index.js"} <= set(assets)
        for key, (path, _) in assets.items():
            assert path.resolve().is_relative_to(PAGE_DIR.resolve()) and path.suffix != ".py", key
            assert ".." not in key.split("/"), key


class PageMarkup(html.parser.HTMLParser):
    """What index.html loads, and anything in it that the page's CSP would block."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.blocked: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        for name in attributes:
            if name == "style" or name.startswith("on"):
                self.blocked.append(f"<{tag} {name}>")
        if tag == "style":
            self.blocked.append("<style>")
        if tag == "script":
            self._in_script = True
            if attributes.get("src") is None:
                self.blocked.append("<script> without src")
        for name in ("src", "href"):
            if attributes.get(name):
                self.loads.append(str(attributes[name]))

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.blocked.append("inline script")


def test_the_page_loads_only_served_files_and_no_inline_code():
    """index.html and demo.js refer only to files the route serves, and hold nothing the CSP blocks."""
    markup = PageMarkup()
    markup.feed((PAGE_DIR / "index.html").read_text(encoding="utf-8"))
    assert markup.blocked == []
    assets = page_assets()
    assert sorted(markup.loads) == ["demo.js", "favicon.svg", "style.css"]
    assert all(load in assets for load in markup.loads)
    imports = re.findall(r'^import .* from "\./([^"]+)";$', (PAGE_DIR / "demo.js").read_text(encoding="utf-8"), re.M)
    assert imports == ["client/index.js"] and imports[0] in assets


def test_the_banner_prints_the_page_url_with_the_token_in_the_fragment():
    """The demo's banner names the page; its token goes after `#`, which browsers never send to a server."""
    settings = dataclasses.replace(load_settings(environ={}), port=8123)
    assert "http://127.0.0.1:8123/demo/#token=t0k.en.sig" in banner(settings, "t0k.en.sig")
    without = banner(settings, None)
    assert "http://127.0.0.1:8123/demo/\n" in without and "#token" not in without


@pytest.mark.timeout(90)
async def test_the_demo_command_serves_the_page():
    """`changesync demo` prints the page's URL and serves it, and the client's modules, from the package."""
    port = free_port()
    environ = {key: value for key, value in os.environ.items() if not key.startswith("CHANGESYNC_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "changesync",
        "demo",
        "--port",
        str(port),
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,  # an unread pipe would fill up and block the demo
    )
    try:
        assert process.stdout is not None
        page = None
        async with asyncio.timeout(PAGE_TIMEOUT_S * 2):
            while page is None:
                line = (await process.stdout.readline()).decode()
                assert line, "the demo exited before printing the page's URL"
                page = re.search(r"(http://\S+/demo/)#token=([\w.-]+)", line)
        url, token = page.groups()
        assert url == f"http://127.0.0.1:{port}/demo/"
        async with httpx.AsyncClient() as client:
            served = await client.get(url)
            assert served.status_code == 200 and served.headers["content-security-policy"] == PAGE_CSP
            assert (await client.get(url + "client/index.js")).status_code == 200
            events = f"http://127.0.0.1:{port}/flows/demo-flow/events"
            async with client.stream("GET", events, params={"access_token": token}) as stream:
                assert stream.status_code == 200, "the token in the page's URL opens the demo flow's stream"
    finally:
        process.terminate()
        async with asyncio.timeout(15):
            await process.wait()


# --- the client's copy in the package ----------------------------------------------------------------


@dataclass(frozen=True)
class ClientTools:
    node: str
    node_modules: Path


@pytest.fixture(scope="session")
def client_tools() -> ClientTools:
    """node, and the client's locked dev dependencies (tsc, playwright-core) from the shared npm cache."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("needs node and npm on PATH")
    target = npm_cache.install(CLIENT_DIR, prefix="client", npm=npm, extra_args=("--ignore-scripts",))
    return ClientTools(node, target / "node_modules")


@pytest.mark.timeout(TSC_TIMEOUT_S + 60)
def test_the_packaged_client_is_current(client_tools, tmp_path):
    """changesync/demo_page/client/ is what `npm run build:demo-page` makes of clients/typescript/src now."""
    dist = tmp_path / "dist"
    compiled = subprocess.run(
        [str(client_tools.node_modules / ".bin" / "tsc"), "-p", str(CLIENT_DIR / "tsconfig.json"), "--outDir", dist],
        capture_output=True,
        text=True,
        timeout=TSC_TIMEOUT_S,
        check=False,
    )
    assert compiled.returncode == 0, f"tsc failed:\n{compiled.stdout}{compiled.stderr}"
    script = CLIENT_DIR / "scripts" / "demo-page-client.mjs"
    checked = subprocess.run(
        [client_tools.node, str(script), "--check", "--dist", str(dist)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


# --- in Chromium -------------------------------------------------------------------------------------


class Browser:
    """driver.mjs, one request at a time; console messages and page errors are kept in ``console``."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log
        self.console: list[str] = []
        self.version = ""
        self._next_id = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, tools: ClientTools, chromium: Path, profile: Path, log: Path) -> AsyncIterator[Browser]:
        with log.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                tools.node,
                str(DRIVER),
                str(tools.node_modules),
                str(chromium),
                str(profile),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            )
        browser = cls(process, log)
        try:
            ready = await browser._message(lambda message: message.get("event") == "ready")
            browser.version = ready["version"]
            yield browser
        finally:
            await browser.close()

    async def _message(self, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The next message ``wanted`` accepts; the console messages read on the way are kept."""
        assert self.process.stdout is not None
        async with asyncio.timeout(PAGE_TIMEOUT_S):
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    raise RuntimeError(f"driver.mjs exited: {self.log.read_text(errors='replace')[-2000:]}")
                message: dict[str, Any] = json.loads(line)
                if wanted(message):
                    return message
                if "event" in message:
                    self.console.append(f"{message['event']}: {message.get('text')}")

    async def call(self, method: str, **params: Any) -> Any:
        assert self.process.stdin is not None
        self._next_id += 1
        request_id = self._next_id
        self.process.stdin.write((json.dumps({"id": request_id, "method": method, **params}) + "\n").encode())
        await self.process.stdin.drain()
        answer = await self._message(lambda message: message.get("id") == request_id)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer["result"]

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


# What the page shows, read from its DOM only.
READ_PAGE = """(() => {
  const text = (selector) => document.querySelector(selector)?.textContent ?? null;
  return {
    indicator: document.getElementById("indicator").dataset.state,
    indicatorText: text("#indicator"),
    run: text("#run"),
    counts: text("#counts"),
    nodes: [...document.querySelectorAll("#nodes .node")].map((node) => ({
      id: node.dataset.node,
      x: Number(node.dataset.x),
      y: Number(node.dataset.y),
      transform: node.style.transform,
      status: node.dataset.status,
      shownStatus: node.querySelector(".status").textContent,
      label: node.querySelector(".label").textContent,
    })),
    edges: [...document.querySelectorAll("#edges .edge")].map((edge) => edge.dataset.edge),
    logs: Object.fromEntries(
      [...document.querySelectorAll("#logs li")].map((item) => [
        item.dataset.node,
        item.querySelector(".text").textContent,
      ]),
    ),
    leaks: ["sk-demo", "never-sent", "_lastEditor", "_worker"].filter((word) => document.body.innerHTML.includes(word)),
  };
})()"""

RUNNING_ANIMATIONS = (
    "document.getAnimations().filter((animation) => animation.effect?.getComputedTiming().iterations !== Infinity)"
    ".length"
)


@dataclass
class Page:
    browser: Browser

    async def read(self) -> dict[str, Any]:
        shown: dict[str, Any] = await self.browser.call("evaluate", expression=READ_PAGE)
        return shown

    async def until(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while True:
            shown = await self.read()
            if predicate(shown):
                return shown
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {PAGE_TIMEOUT_S:g} s waiting for {what}; the page shows {shown}; "
                    f"console: {self.browser.console[-10:]}"
                )
            await asyncio.sleep(POLL_INTERVAL_S)

    async def until_settled(self) -> None:
        """Until no transition or finite animation runs (a running node's pulse never ends)."""
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while await self.browser.call("evaluate", expression=RUNNING_ANIMATIONS):
            assert time.monotonic() < deadline, "the page's animations did not end"
            await asyncio.sleep(POLL_INTERVAL_S)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def positions(shown: dict[str, Any]) -> dict[str, tuple[float, float]]:
    return {node["id"]: (node["x"], node["y"]) for node in shown["nodes"]}


def moved(before: dict[str, tuple[float, float]]) -> Callable[[dict[str, Any]], bool]:
    return lambda shown: any(
        node["id"] in before and before[node["id"]] != (node["x"], node["y"]) for node in shown["nodes"]
    )


def growing_log() -> Callable[[dict[str, Any]], bool]:
    """True once one node's LLM output of one run has been seen at two different, non-empty lengths."""
    lengths: dict[tuple[str, str], set[int]] = {}

    def check(shown: dict[str, Any]) -> bool:
        for node, text in shown["logs"].items():
            if text:
                lengths.setdefault((shown["run"], node), set()).add(len(text))
        return any(len(seen) >= 2 for seen in lengths.values())

    return check


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.is_file():
        pytest.skip(f"the browser test needs {CHROMIUM} (apt-get install chromium)")
    return CHROMIUM


def errors(browser: Browser) -> list[str]:
    return [line for line in browser.console if line.startswith(("pageerror", "console: error"))]


@pytest.mark.timeout(180)
async def test_the_page_draws_the_demo_live(chromium, client_tools, mongo_backend, database_name, database, tmp_path):
    """In Chromium, the page (JWT auth on, token from the fragment) connects, draws the canvas, moves
    the nodes the writer drags, shows each node's status and its growing LLM output, draws the new
    node's edge, and shows no filtered field; while the service restarts it says so, then goes on.
    It breaks none of its CSP. A screenshot is written at the end."""
    settings, token = with_demo_auth(
        service_settings(mongo_backend.uri, database_name, auth={"mode": "jwt", "jwt_secret": SECRET}, demo_page=True)
    )
    assert token is not None
    screenshot = tmp_path / "demo-page.png"
    writer = asyncio.create_task(write_forever(database, step_interval_s=FAST_STEP_S))
    try:
        async with Browser.launch(client_tools, chromium, tmp_path / "profile", tmp_path / "driver.log") as browser:
            page = Page(browser)
            async with run_service(settings) as service:
                await browser.call("goto", url=f"{service.base_url}/demo/#token={token}")
                first = await page.until(
                    lambda shown: shown["indicator"] == "connected" and len(shown["nodes"]) >= 3, "the canvas, live"
                )
                assert first["indicatorText"] == "connected"
                assert [node["label"] for node in first["nodes"][:3]] == ["Step 0", "Step 1", "Step 2"]
                for node in first["nodes"]:
                    assert node["transform"] == f"translate({node['x']:g}px, {node['y']:g}px)", node
                await page.until(moved(positions(first)), "a node to move")
                status = await page.until(
                    lambda shown: any(node["status"] in ("running", "succeeded") for node in shown["nodes"]),
                    "a node's status",
                )
                assert all(node["shownStatus"] == node["status"] for node in status["nodes"])
                assert re.fullmatch(r"run \d+ · (running|succeeded)", status["run"]), status["run"]
                await page.until(growing_log(), "a node's LLM output to grow")
                edges = len(first["edges"])
                grown = await page.until(lambda shown: len(shown["edges"]) > edges, "the new node's edge")
                assert len(grown["nodes"]) > len(first["nodes"])
                assert grown["leaks"] == [], "the page shows fields the filters remove"
                assert errors(browser) == [], "page errors or CSP violations"

            # The service restarts on the same port while the writer goes on.
            down = await page.until(lambda shown: shown["indicator"] == "reconnecting", "the indicator, reconnecting")
            assert down["indicatorText"] == "reconnecting…"
            async with run_service(settings):
                back = await page.until(lambda shown: shown["indicator"] == "connected", "the indicator, connected")
                await page.until(moved(positions(back)), "a node to move after the restart")
                last = await page.until(
                    lambda shown: any(text.strip() for text in shown["logs"].values()), "LLM output in the screenshot"
                )
                # A still picture: no more writes, and the moves and fade-ins finished.
                await stop(writer)
                await page.until_settled()
                await browser.call("screenshot", path=str(screenshot))
    finally:
        await stop(writer)
    assert last["leaks"] == []
    # The restart cut the stream and refused connections, which the browser logs (net::ERR_…); nothing else.
    assert [line for line in errors(browser) if "net::ERR_" not in line] == []
    assert screenshot.stat().st_size > 0
    print(f"\ndemo page screenshot ({browser.version}): {screenshot}")
    print(f"  the page showed: {last['run']!r}, {len(last['nodes'])} nodes, {len(last['edges'])} edges")
