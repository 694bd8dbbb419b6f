"""The service with auth.jwks_url, over real HTTP: streams opened with an identity provider's tokens
while it rotates its keys and goes away; a provider that never answers stops the start."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import time

import httpx
import pytest

from changesync.errors import ConfigError
from harness import EventStream, free_port, metric, run_service, service_settings
from idp import IdentityProvider

FLOW = "alices-flow"


@pytest.fixture
def idp():
    provider = IdentityProvider()
    provider.add_key("k1")
    with provider.serve():
        yield provider


@pytest.fixture
async def service(mongo_backend, database_name, database, idp):
    await database.flowboards.insert_one({"_id": FLOW, "ownerId": "alice", "members": [], "title": "draft"})
    settings = service_settings(
        mongo_backend.uri,
        database_name,
        auth={"mode": "jwt", "jwks_url": idp.url, "jwks_refresh_interval_s": 0.2, "jwks_timeout_s": 1.0},
    )
    async with run_service(settings) as running:
        yield running


async def answer(service, token: str) -> tuple[int, dict | None]:
    """The status (and error body) of a stream opened with ``token``."""
    headers = {"Authorization": f"Bearer {token}"}
    async with EventStream(service.events_url(FLOW, snapshot="false"), headers=headers) as stream:
        return stream.status_code, stream.error_body


async def until_status(service, token: str, status: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (got := (await answer(service, token))[0]) != status:
        if time.monotonic() > deadline:
            raise AssertionError(f"still {got} after {timeout_s:g} s, expected {status}")
        await asyncio.sleep(0.05)


class TestJwksUrl:
    async def test_a_stream_opened_with_the_providers_token_gets_events(self, service, idp, database):
        """A token signed with a key of the JWKS opens the flow's stream, which carries its changes."""
        headers = {"Authorization": f"Bearer {idp.token('k1')}"}
        async with EventStream(service.events_url(FLOW), headers=headers) as stream:
            assert stream.status_code == 200
            assert (await stream.next()).event == "SNAPSHOT"
            await database.flowboards.update_one({"_id": FLOW}, {"$set": {"title": "final"}})
            event = await stream.next()
        assert event.event == "SYNC_CANVAS"
        assert event.data["flowId"] == FLOW

    async def test_key_rotation(self, service, idp):
        """The provider's new key is accepted after a refresh; once it drops the old one, the old one's
        tokens are refused; streams keep working throughout."""
        old_token = idp.token("k1")
        idp.add_key("k2")
        await until_status(service, idp.token("k2"), 200)
        assert (await answer(service, old_token))[0] == 200
        idp.remove_key("k1")
        await until_status(service, old_token, 401)
        assert await answer(service, old_token) == (
            401,
            {"error": "unauthorized", "detail": "the token's key id is unknown"},
        )
        assert (await answer(service, idp.token("k2")))[0] == 200

    async def test_the_provider_down_keeps_the_keys(self, service, idp, caplog):
        """With the provider gone, tokens signed with the keys fetched before still open streams; the
        failures are counted and a warning is logged once."""
        caplog.set_level(logging.DEBUG, logger="changesync.jwks")
        idp.stop()
        deadline = time.monotonic() + 5
        while await metric(service, "changesync_jwks_fetch_failures_total") < 3:
            assert time.monotonic() < deadline, "no failed fetches counted"
            await asyncio.sleep(0.05)
        assert (await answer(service, idp.token("k1")))[0] == 200
        assert (await answer(service, idp.token("unknown")))[0] == 401
        records = [record for record in caplog.records if record.name == "changesync.jwks"]
        warnings = [record.getMessage() for record in records if record.levelno >= logging.WARNING]
        assert len(warnings) == 1
        assert warnings[0].startswith(f"cannot fetch the JWKS from {idp.url}: cannot connect (")
        async with httpx.AsyncClient() as http:
            ready = await http.get(f"{service.base_url}/readyz")
        assert ready.status_code == 200


class TestStartUp:
    async def test_a_provider_that_never_answers_stops_the_start(self, mongo_backend, database_name):
        """The service does not start without its keys; the error names auth.jwks_url and the cause."""
        url = f"http://127.0.0.1:{free_port()}/.well-known/jwks.json"
        settings = service_settings(mongo_backend.uri, database_name, auth={"mode": "jwt", "jwks_url": url})
        with pytest.raises(ConfigError) as caught:
            async with run_service(settings, enable_images=False):
                pass
        assert caught.value.key == "auth.jwks_url"
        message = str(caught.value)
        assert message.startswith("auth.jwks_url: expected a JWKS URL that answers at start-up (cannot connect (")
        assert message.endswith(f"got '{url}'")

    @pytest.mark.parametrize(
        ("url", "pattern"),
        [
            (
                "http://127.0.0.1:{port}/jwks",
                r"changesync: configuration error: auth\.jwks_url: expected a JWKS URL that answers at start-up"
                r" \(cannot connect \(.*refused.*\)\), got 'http://127\.0\.0\.1:{port}/jwks'",
            ),
            (
                "http://idp.example.com/jwks",
                r"changesync: configuration error: CHANGESYNC_AUTH_JWKS_URL: expected an https:// URL"
                r" \(http:// only for 127\.0\.0\.1, ::1 or localhost\), or empty, got 'http://idp\.example\.com/jwks'",
            ),
        ],
    )
    def test_serve_exits_2_with_the_cause(self, url, pattern):
        """changesync serve refuses to start, with exit code 2 and one line naming the setting and the cause."""
        port = free_port()
        environ = {key: value for key, value in os.environ.items() if not key.startswith("CHANGESYNC_")}
        environ["CHANGESYNC_AUTH_JWKS_URL"] = url.format(port=port)
        result = subprocess.run(
            [sys.executable, "-m", "changesync", "serve"], capture_output=True, text=True, env=environ, timeout=60
        )
        assert result.returncode == 2
        assert re.fullmatch(pattern.format(port=port), result.stderr.strip()), result.stderr
