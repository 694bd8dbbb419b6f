"""docker/nginx-hub.conf, the proxy of the compose `hub` profile, and the profile running for real.

The checks of the nginx configuration read the file and run anywhere; `nginx -t` runs where nginx is
installed. The live test brings the profile up under a project name of its own through the Compose
CLI, and skips, with the reason, where no Docker engine answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from changesync.delivering.stream import EVENT_STREAM_HEADERS
from changesync.settings import Settings
from compose_projects import COMMAND_TIMEOUT_S, ComposeCommandError, ComposeProject, port_is_free
from tabs import LogWriter, Tab, until

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
NGINX_CONF = REPO_ROOT / "docker" / "nginx-hub.conf"
HUB_PROFILE = "hub"
INSTANCES = ("changesync-hub-1", "changesync-hub-2")
PROXY_SERVICE = "hub-proxy"
UPSTREAM = "changesync"
# Docker's embedded DNS server, on every user-defined network.
DOCKER_DNS = "127.0.0.11"
# Directives that pin a client to one instance.
STICKY_DIRECTIVES = frozenset({"ip_hash", "hash", "sticky", "sticky_cookie_insert"})
# A stream may miss this many heartbeats in a row (a busy event loop, a slow network) before nginx ends it.
HEARTBEATS_PER_READ_TIMEOUT = 4
NGINX_TIME_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
NGINX_RESOLVE_SINCE = (1, 27, 3)
NGINX_TEST_TIMEOUT_S = 30
# The nginx configuration tokens: a quoted string, a comment, a brace or semicolon, a word.
NGINX_TOKEN = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|#[^\n]*|[{};]|[^\s{};"'#]+""")


@dataclass(frozen=True, slots=True)
class Directive:
    """One nginx directive; ``block`` is None for a simple directive (``name args;``)."""

    name: str
    args: tuple[str, ...]
    block: tuple[Directive, ...] | None = None

    def all(self, name: str) -> list[Directive]:
        return [child for child in self.block or () if child.name == name]

    def one(self, name: str) -> Directive:
        (found,) = self.all(name)
        return found

    def walk(self) -> Iterator[Directive]:
        for child in self.block or ():
            yield child
            yield from child.walk()


def parse_nginx(text: str) -> Directive:
    """The configuration as a tree under an unnamed root (enough of nginx's syntax for this file)."""
    stack: list[tuple[list[str], list[Directive]]] = [([""], [])]
    words: list[str] = []
    for match in NGINX_TOKEN.finditer(text):
        token = match[0]
        if token.startswith("#"):
            continue
        if token == ";":
            stack[-1][1].append(Directive(words[0], tuple(words[1:])))
            words = []
        elif token == "{":
            stack.append((words, []))
            words = []
        elif token == "}":
            assert not words and len(stack) > 1, f"unexpected }} at offset {match.start()}"
            (name, *args), children = stack.pop()
            stack[-1][1].append(Directive(name, tuple(args), tuple(children)))
        else:
            words.append(token[1:-1] if token[0] in "\"'" else token)
    assert len(stack) == 1 and not words, "the configuration ends inside a block or a directive"
    return Directive("", (), tuple(stack[0][1]))


def nginx_seconds(value: str) -> float:
    """An nginx time (``120s``, ``2m``, ``500ms``, ``90``) in seconds."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value)
    assert match is not None, f"{value!r} is not an nginx time"
    return int(match[1]) * NGINX_TIME_UNITS[match[2] or "s"]


@pytest.fixture(scope="module")
def nginx_conf() -> Directive:
    return parse_nginx(NGINX_CONF.read_text())


@pytest.fixture(scope="module")
def location(nginx_conf: Directive) -> Directive:
    (proxied,) = [found for found in nginx_conf.one("server").all("location") if found.args == ("/",)]
    return proxied


class TestNginxHubConf:
    def test_upstream_is_both_instances_by_round_robin(self, nginx_conf, services):
        """The upstream lists the profile's changesync instances on the service's port, and nothing
        anywhere pins a client to one of them (no ip_hash, hash or sticky)."""
        instances = [
            name
            for name, service in services.items()
            if "build" in service and HUB_PROFILE in service.get("profiles", [])
        ]
        assert instances == list(INSTANCES)
        upstream = nginx_conf.one("upstream")
        assert upstream.args == (UPSTREAM,)
        servers = [server.args[0] for server in upstream.all("server")]
        assert servers == [f"{name}:{Settings().port}" for name in INSTANCES]
        assert not any(env.startswith("CHANGESYNC_PORT") for name in INSTANCES for env in services[name]["environment"])
        sticky = [directive.name for directive in nginx_conf.walk() if directive.name in STICKY_DIRECTIVES]
        assert sticky == []

    def test_round_robin_is_shared_by_the_workers(self, nginx_conf):
        """The upstream has a shared-memory zone, so nginx's workers take turns in one round robin."""
        (zone,) = nginx_conf.one("upstream").all("zone")
        assert zone.args[0] == UPSTREAM

    def test_instance_names_are_resolved_again(self, nginx_conf):
        """Every upstream server is re-resolved through Docker's DNS, so a recreated instance is found."""
        resolver = nginx_conf.one("resolver")
        assert resolver.args[0] == DOCKER_DNS
        assert all("resolve" in server.args[1:] for server in nginx_conf.one("upstream").all("server"))

    def test_streams_pass_through_unbuffered(self, location):
        """The location proxies to the upstream over HTTP/1.1 with an empty Connection header, and neither
        buffers, caches nor compresses what the instances send."""
        assert location.one("proxy_pass").args == (f"http://{UPSTREAM}",)
        assert location.one("proxy_http_version").args == ("1.1",)
        headers = {directive.args[0].lower(): directive.args[1:] for directive in location.all("proxy_set_header")}
        assert headers["connection"] == ("",)
        assert location.one("proxy_buffering").args == ("off",)
        assert location.one("proxy_cache").args == ("off",)
        assert location.one("gzip").args == ("off",)

    def test_x_accel_buffering_is_honoured(self, nginx_conf):
        """changesync sends `X-Accel-Buffering: no` with its streams, and the configuration does not tell
        nginx to ignore it."""
        assert (b"x-accel-buffering", b"no") in EVENT_STREAM_HEADERS
        for directive in nginx_conf.walk():
            if directive.name == "proxy_ignore_headers":
                assert "x-accel-buffering" not in {arg.lower() for arg in directive.args}

    def test_read_timeout_outlasts_several_heartbeats(self, location):
        """nginx ends a stream after proxy_read_timeout without a byte: that is several heartbeats."""
        timeout_s = nginx_seconds(location.one("proxy_read_timeout").args[0])
        assert timeout_s >= HEARTBEATS_PER_READ_TIMEOUT * Settings().stream.heartbeat_interval_s

    def test_listens_on_the_published_container_port(self, nginx_conf, services):
        """The server listens on the container port that docker-compose.yml publishes for the proxy."""
        (spec,) = services[PROXY_SERVICE]["ports"]
        assert nginx_conf.one("server").one("listen").args == (spec.rpartition(":")[2],)

    def test_nginx_accepts_the_configuration(self, tmp_path):
        """`nginx -t` accepts the file inside an http block (where nginx is installed). The instance names
        become localhost, which resolves here; an nginx older than 1.27.3 checks it without `resolve`."""
        nginx = shutil.which("nginx")
        if nginx is None:
            pytest.skip("nginx is not on PATH")
        version = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=NGINX_TEST_TIMEOUT_S).stderr
        found = re.search(r"nginx/(\d+(?:\.\d+)*)", version)
        assert found is not None, version
        text = NGINX_CONF.read_text()
        for name in INSTANCES:
            text = text.replace(f"server {name}:", "server localhost:")
        if tuple(int(part) for part in found[1].split(".")) < NGINX_RESOLVE_SINCE:
            text = re.sub(r"\s+resolve(?=\s*;)", "", text)
        (tmp_path / "hub.conf").write_text(text)
        main = tmp_path / "nginx.conf"
        main.write_text(
            f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
            f"events {{}}\nhttp {{ include {tmp_path}/hub.conf; }}\n"
        )
        result = subprocess.run(
            [nginx, "-t", "-q", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(main)],
            capture_output=True,
            text=True,
            timeout=NGINX_TEST_TIMEOUT_S,
        )
        assert result.returncode == 0, result.stderr


# --- the profile, live -------------------------------------------------------------------------------

# The stack runs under a project name of its own, so that it never touches a developer's stack; it
# publishes the compose file's ports (test_docker_compose.py checks them), so those must be free.
PROJECT_PREFIX = "changesync-hub-test"
PROXY_URL = "http://127.0.0.1:8002"
HOST_MONGODB_URI = "mongodb://127.0.0.1:27017/?directConnection=true"
HOST_PORTS = (27017, 8002)
# The first `up` builds the image and pulls mongo, valkey and nginx.
UP_TIMEOUT_S = 600.0
DOWN_TIMEOUT_S = 120.0
# Bounds for both instances to be ready with one watcher, and for the survivor to take the lease over.
READY_TIMEOUT_S = 120.0
TAKEOVER_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.5
# Chunks both clients receive before the kill, and chunks written after the takeover.
CHUNKS_BEFORE_KILL = 20
CHUNKS_AFTER_TAKEOVER = 20
# Pace of the writer (a pause between writes, never used to wait for an outcome).
WRITE_INTERVAL_S = 0.02
LOG_TAIL_LINES = 60
# Run inside an instance: print its /readyz body, a 503's included.
READYZ_SCRIPT = """
import urllib.error, urllib.request
try:
    body = urllib.request.urlopen("http://127.0.0.1:8000/readyz", timeout=4).read()
except urllib.error.HTTPError as exc:
    body = exc.read()
print(body.decode())
"""
ADDRESS_SCRIPT = "import socket; print(socket.gethostbyname(socket.gethostname()))"


class HubProject(ComposeProject):
    """The `hub` profile of docker-compose.yml under a project name of its own."""

    async def readiness(self, service: str) -> dict[str, Any] | None:
        """The instance's /readyz body, or None while it cannot answer (not running, not listening)."""
        try:
            body = await self.arun("exec", "-T", service, "python", "-c", READYZ_SCRIPT)
        except ComposeCommandError:
            return None
        with contextlib.suppress(json.JSONDecodeError):
            answer = json.loads(body)
            if isinstance(answer, dict):
                return answer
        return None

    async def address(self, service: str) -> str:
        """The instance's address and port on the compose network, as nginx's $upstream_addr shows them."""
        host = (await self.arun("exec", "-T", service, "python", "-c", ADDRESS_SCRIPT)).strip()
        return f"{host}:{Settings().port}"


async def the_watcher(project: HubProject, instances: tuple[str, ...], timeout_s: float) -> str:
    """The instance that holds the watcher's lease, once every one of ``instances`` is ready and one is."""
    answers: list[dict[str, Any] | None] = []
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                answers = [await project.readiness(name) for name in instances]
                if all(answer is not None and answer.get("status") == "ready" for answer in answers):
                    roles = [answer["role"] for answer in answers if answer is not None]
                    watchers = [name for name, role in zip(instances, roles, strict=True) if role == "watcher"]
                    if len(watchers) == 1:
                        return watchers[0]
                await asyncio.sleep(POLL_INTERVAL_S)
    except TimeoutError:
        raise AssertionError(f"no single ready watcher among {instances} after {timeout_s:g} s: {answers}") from None


def recorder(served_by: list[str], instance_at: dict[str, str]) -> Callable[[httpx.Response], Awaitable[None]]:
    """An httpx response hook: appends the instance that answered each 200 (nginx's X-Upstream-Addr)."""

    async def record(response: httpx.Response) -> None:
        if response.status_code == 200:
            tried = response.headers.get("x-upstream-addr", "")
            # "a:8000, b:8000" when nginx moved on from an instance it could not reach: the last answered.
            answered = tried.replace(" : ", ", ").split(", ")[-1]
            served_by.append(instance_at.get(answered, tried))

    return record


@contextlib.asynccontextmanager
async def sse_client(served_by: list[str], instance_at: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    timeout = httpx.Timeout(COMMAND_TIMEOUT_S, read=None)
    async with httpx.AsyncClient(timeout=timeout, event_hooks={"response": [recorder(served_by, instance_at)]}) as http:
        yield http


async def write_until(stop: asyncio.Event, writer: LogWriter, flow: str) -> None:
    while not stop.is_set():
        await writer.log(flow)
        await asyncio.sleep(WRITE_INTERVAL_S)
    await writer.end()


@pytest.fixture
def hub_stack(docker_engine, compose_cli) -> Iterator[HubProject]:
    """The `hub` profile up under a new project name (after the test: its logs printed, then down -v)."""
    for port in HOST_PORTS:
        if not port_is_free(port):
            pytest.skip(f"127.0.0.1:{port} is in use (another compose stack?), and the hub profile publishes it")
    project = HubProject(compose_cli, f"{PROJECT_PREFIX}-{secrets.token_hex(3)}", (HUB_PROFILE,))
    try:
        project.run("up", "--detach", "--build", PROXY_SERVICE, timeout_s=UP_TIMEOUT_S)
        yield project
    finally:
        with contextlib.suppress(ComposeCommandError, subprocess.TimeoutExpired):
            print(project.run("logs", "--no-color", "--tail", str(LOG_TAIL_LINES)))
        project.run("down", "--volumes", "--remove-orphans", "--timeout", "5", timeout_s=DOWN_TIMEOUT_S)


class TestHubProfileLive:
    @pytest.mark.timeout(900)  # the first run builds the image and pulls three others
    async def test_clients_through_the_proxy_lose_nothing_when_the_watcher_is_killed(self, hub_stack, services):
        """Two SSE clients through nginx land on the two instances and receive the same chunks, with the
        same ids, in order, once. kill -9 of the instance that holds the watcher's lease: the other takes
        over, the client that was cut off resumes through the proxy by its last event id, the other client
        stays connected, and neither misses a chunk."""
        watcher = await the_watcher(hub_stack, INSTANCES, READY_TIMEOUT_S)
        (survivor,) = [name for name in INSTANCES if name != watcher]
        instance_at = {await hub_stack.address(name): name for name in INSTANCES}
        flow = f"flow-compose-{secrets.token_hex(3)}"
        url = f"{PROXY_URL}/flows/{flow}/events?snapshot=false"
        tabs = [Tab(f"tab-{index}", flow, lambda: url) for index in range(2)]
        served_by: dict[str, list[str]] = {tab.name: [] for tab in tabs}
        database = services[INSTANCES[0]]["environment"]["CHANGESYNC_DATABASE"]
        stop = asyncio.Event()

        async with AsyncMongoClient(HOST_MONGODB_URI) as mongo, contextlib.AsyncExitStack() as clients:
            writer = LogWriter(mongo[database], [flow])
            https = [await clients.enter_async_context(sse_client(served_by[tab.name], instance_at)) for tab in tabs]
            async with asyncio.TaskGroup() as group:
                for tab, http in zip(tabs, https, strict=True):
                    group.create_task(tab.run(http))
                    await until(lambda tab=tab: bool(served_by[tab.name]), f"{tab.name} to connect through nginx")
                assert {served[0] for served in served_by.values()} == set(INSTANCES), f"no round robin: {served_by}"
                group.create_task(write_until(stop, writer, flow))
                await until(
                    lambda: all(len(tab.seqs) >= CHUNKS_BEFORE_KILL for tab in tabs), "both clients to receive chunks"
                )
                await hub_stack.arun("kill", "--signal", "SIGKILL", watcher)
                await the_watcher(hub_stack, (survivor,), TAKEOVER_TIMEOUT_S)
                written = writer.counts[flow]
                await until(lambda: writer.counts[flow] >= written + CHUNKS_AFTER_TAKEOVER, "writes after the takeover")
                stop.set()
                await until(lambda: all(tab.done.is_set() for tab in tabs), "the end marker on both clients")

        for tab in tabs:
            lost = [resync for resync in tab.resyncs if not resync["resumable"]]
            assert lost == [], f"{tab.name} had to reload: {lost}"
            assert tab.foreign == [], f"{tab.name} received another flow's events"
            assert tab.seqs == list(range(writer.counts[flow])), f"{tab.name}: gap, duplicate or disorder"
            assert len(tab.ids) == len(set(tab.ids)), f"{tab.name} received an id twice"
        assert tabs[0].ids == tabs[1].ids, "the instances gave the same chunks different ids"
        (cut,) = [tab for tab in tabs if served_by[tab.name][0] == watcher]
        (kept,) = [tab for tab in tabs if tab is not cut]
        assert len(cut.connections) >= 2, f"{cut.name} was on {watcher} and never reconnected"
        assert set(served_by[cut.name][1:]) == {survivor}, served_by
        assert len(kept.connections) == 1, f"{kept.name}, on {survivor}, was cut off too"
