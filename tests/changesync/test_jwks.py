"""The JWKS URL (changesync.jwks) against a real JWKS server on loopback: start-up, rotation, unknown
key ids, an endpoint that is down or hangs, and the setting's checks."""

import asyncio
import contextlib
import logging
import secrets
import time

import pytest

from changesync.auth import Authenticator
from changesync.errors import AuthenticationError, ConfigError
from changesync.jwks import MAX_JWKS_BYTES, RemoteKeySet
from changesync.metrics import Metrics
from changesync.settings import AuthSettings, load_settings
from harness import free_port
from idp import IdentityProvider

# Fetches that unknown key ids ask for, at most one per this many seconds (instead of 10 s).
MIN_INTERVAL_S = 0.5
# Time measured on both sides of a socket: the server notes a request a little after it was sent.
SLACK_S = 0.05


async def until(predicate, what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def refreshing(keys: RemoteKeySet):
    """Run the background refresh, as the service's lifespan does, until the block ends."""
    task = asyncio.create_task(keys.run())
    try:
        yield keys
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def authenticate(authenticator: Authenticator, token: str):
    return authenticator.authenticate({"authorization": f"Bearer {token}"}, {}, {})


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}/.well-known/jwks.json"


@pytest.fixture
def idp():
    provider = IdentityProvider()
    provider.add_key("k1")
    with provider.serve():
        yield provider


class TestStartUp:
    def test_the_keys_are_fetched_once_at_start_up(self, idp):
        """The authenticator fetches the JWKS when it is built, and verifies tokens from memory."""
        idp.add_key("r1", "RS256")
        authenticator = Authenticator(AuthSettings(jwks_url=idp.url))
        assert authenticate(authenticator, idp.token("k1")).subject == "alice"
        assert authenticate(authenticator, idp.token("r1", "bob")).subject == "bob"
        assert len(idp.fetched_at) == 1

    def test_an_endpoint_that_never_answers_stops_the_start(self):
        """No connection at start-up is a ConfigError naming auth.jwks_url, the URL and the cause."""
        url = closed_url()
        with pytest.raises(ConfigError) as caught:
            Authenticator(AuthSettings(jwks_url=url))
        assert caught.value.key == "auth.jwks_url"
        message = str(caught.value)
        assert message.startswith("auth.jwks_url: expected a JWKS URL that answers at start-up (cannot connect")
        assert url in message

    @pytest.mark.parametrize(
        ("answer", "cause"),
        [
            ({"status": 404}, "(HTTP 404)"),
            ({"status": 503}, "(HTTP 503)"),
            (
                {"redirect_to": "http://idp.example.com/jwks"},
                "(HTTP 302, to 'http://idp.example.com/jwks' (redirects are not followed))",
            ),
            ({"body": b"<html>sign in</html>"}, "(the answer is not JSON)"),
            ({"body": b"[1, 2]"}, '(the answer is not a JWKS (a JSON object with a "keys" list))'),
            ({"body": b'{"keys": []}'}, "(the JWKS holds no usable key"),
            ({"body": b'{"keys": [{"kty": "none"}]}'}, "(the JWKS holds no usable key"),
            ({"body": b" " * (MAX_JWKS_BYTES + 1)}, f"(the answer is larger than {MAX_JWKS_BYTES} bytes)"),
        ],
    )
    def test_an_endpoint_that_answers_no_jwks_stops_the_start(self, idp, answer, cause):
        """An HTTP error or a body that is no usable JWKS is a ConfigError that says which."""
        idp.status = answer.get("status", 200)
        idp.body = answer.get("body")
        idp.redirect_to = answer.get("redirect_to", "")
        with pytest.raises(ConfigError, match=r"^auth\.jwks_url: expected a JWKS URL that answers") as caught:
            Authenticator(AuthSettings(jwks_url=idp.url))
        assert cause in str(caught.value)

    def test_a_hung_endpoint_times_out(self, idp):
        """A start-up fetch gives up after auth.jwks_timeout_s."""
        idp.hang()
        started = time.monotonic()
        with pytest.raises(ConfigError, match=r"\(no answer within 0\.3 s\)"):
            Authenticator(AuthSettings(jwks_url=idp.url, jwks_timeout_s=0.3))
        assert time.monotonic() - started < 2

    def test_serving_fetches_loading_alone_does_not(self):
        """load_settings checks the endpoint only for the service; other commands do not touch it."""
        environ = {"CHANGESYNC_AUTH_JWKS_URL": closed_url()}
        assert load_settings(environ=environ).auth.jwks_url == environ["CHANGESYNC_AUTH_JWKS_URL"]
        with pytest.raises(ConfigError) as caught:
            load_settings(environ=environ, serving=True)
        assert caught.value.key == "auth.jwks_url"


class TestTheSetting:
    @pytest.mark.parametrize(
        "url",
        [
            "https://idp.example.com/.well-known/jwks.json",
            "https://tenant.eu.auth0.com:443/.well-known/jwks.json",
            "http://127.0.0.1:8080/jwks",
            "http://[::1]:8080/jwks",
            "http://localhost/jwks",
            "HTTP://LocalHost:9000/jwks",
        ],
    )
    def test_https_or_loopback_http_is_accepted(self, url):
        """https:// anywhere, plain http:// to this machine (a sidecar, a test server)."""
        assert load_settings(environ={"CHANGESYNC_AUTH_JWKS_URL": url}).auth.jwks_url == url

    @pytest.mark.parametrize(
        "url",
        [
            "http://idp.example.com/.well-known/jwks.json",
            "http://10.0.0.7/jwks",
            "http://127.0.0.1.example.com/jwks",
            "http://localhost.example.com/jwks",
            "ftp://idp.example.com/jwks",
            "https://",
            "https://[::1/jwks",
            "idp.example.com/jwks",
        ],
    )
    def test_anything_else_is_refused(self, url):
        """Any other URL is refused when the settings are read, naming the variable and what it allows."""
        with pytest.raises(ConfigError) as caught:
            load_settings(environ={"CHANGESYNC_AUTH_JWKS_URL": url})
        assert caught.value.key == "CHANGESYNC_AUTH_JWKS_URL"
        assert "expected an https:// URL (http:// only for 127.0.0.1, ::1 or localhost)" in str(caught.value)

    def test_the_url_is_the_only_key_source(self):
        """A JWKS URL beside another key source is refused, before anything is fetched."""
        environ = {"CHANGESYNC_AUTH_JWKS_URL": closed_url(), "CHANGESYNC_AUTH_JWT_SECRET": "s" * 32}
        with pytest.raises(ConfigError) as caught:
            load_settings(environ=environ)
        assert caught.value.key == "auth.jwks_url"
        assert "the only key source (auth.jwt_secret is set too)" in str(caught.value)

    def test_a_password_in_the_url_is_not_shown(self):
        """A URL's password never reaches an error message."""
        with pytest.raises(ConfigError) as caught:
            Authenticator(AuthSettings(jwks_url=closed_url().replace("127.0.0.1", "user:hunter2@127.0.0.1")))
        assert "hunter2" not in str(caught.value)


class TestRefresh:
    async def test_rotation(self, idp, caplog):
        """A key the provider adds is used after the next periodic fetch; a key it removes is refused after it."""
        caplog.set_level(logging.INFO, logger="changesync.jwks")
        authenticator = Authenticator(AuthSettings(jwks_url=idp.url, jwks_refresh_interval_s=0.1))
        keys = authenticator.remote_keys
        assert keys is not None
        old_token = idp.token("k1")
        async with refreshing(keys):
            idp.add_key("k2")
            await until(lambda: "k2" in keys.key_ids, "k2 to be fetched")
            assert authenticate(authenticator, idp.token("k2")).subject == "alice"
            assert authenticate(authenticator, old_token).subject == "alice"
            idp.remove_key("k1")
            await until(lambda: "k1" not in keys.key_ids, "k1 to be gone")
            with pytest.raises(AuthenticationError, match="the token's key id is unknown"):
                authenticate(authenticator, old_token)
            assert authenticate(authenticator, idp.token("k2")).subject == "alice"
        changes = [record.getMessage() for record in caplog.records if "changed" in record.getMessage()]
        assert changes == [
            f"JWKS from {idp.url} changed: added k2, removed none",
            f"JWKS from {idp.url} changed: added none, removed k1",
        ]

    async def test_an_unknown_kid_asks_for_a_fetch(self, idp):
        """A token signed with a key published since the last fetch is refused, and accepted once the
        fetch it asked for (long before the periodic one) is done."""
        keys = RemoteKeySet(idp.url, refresh_interval_s=300, timeout_s=2, min_refresh_interval_s=0)
        keys.load()
        idp.add_key("k2")
        async with refreshing(keys):
            with pytest.raises(KeyError):
                keys.key_for("k2")
            await until(lambda: "k2" in keys.key_ids, "the fetch an unknown kid asked for")
            assert keys.key_for("k2") is not None
        assert len(idp.fetched_at) == 2

    async def test_unknown_kids_cannot_flood_the_provider(self, idp):
        """However many tokens name unknown key ids, fetches are at least the minimum interval apart."""
        keys = RemoteKeySet(idp.url, refresh_interval_s=300, timeout_s=2, min_refresh_interval_s=MIN_INTERVAL_S)
        keys.load()
        flood_s = 3 * MIN_INTERVAL_S
        async with refreshing(keys):
            started = time.monotonic()
            refused = 0
            while time.monotonic() - started < flood_s:
                for _ in range(50):
                    with pytest.raises(KeyError):
                        keys.key_for(secrets.token_hex(8))
                    refused += 1
                await asyncio.sleep(0.01)
        gaps = [later - earlier for earlier, later in zip(idp.fetched_at, idp.fetched_at[1:], strict=False)]
        assert refused > 1000
        assert 2 <= len(idp.fetched_at) <= 1 + flood_s / MIN_INTERVAL_S + 1
        assert min(gaps) >= MIN_INTERVAL_S - SLACK_S

    async def test_the_minimum_interval_also_holds_for_the_authenticator(self, idp):
        """Through the authenticator, an unknown kid is a 401 at once and a fetch soon after (at most
        every 10 s, or the refresh interval when it is shorter)."""
        authenticator = Authenticator(AuthSettings(jwks_url=idp.url, jwks_refresh_interval_s=0.2))
        keys = authenticator.remote_keys
        assert keys is not None and keys.min_refresh_interval_s == 0.2
        idp.add_key("k2")
        async with refreshing(keys):
            with pytest.raises(AuthenticationError, match="the token's key id is unknown"):
                authenticate(authenticator, idp.token("k2"))
            await until(lambda: "k2" in keys.key_ids, "k2 to be fetched")
            assert authenticate(authenticator, idp.token("k2")).subject == "alice"


class TestEndpointDown:
    async def test_the_cached_keys_stay_in_use_and_each_outage_warns_once(self, caplog):
        """While the endpoint fails (HTTP errors, then no server at all) the keys fetched before verify
        tokens; every failure is counted, the first of each run logged as a warning."""
        idp = IdentityProvider()
        idp.add_key("k1")
        metrics = Metrics()

        def failures() -> float:
            return metrics.registry.get_sample_value("changesync_jwks_fetch_failures_total") or 0.0

        with idp.serve():
            authenticator = Authenticator(AuthSettings(jwks_url=idp.url, jwks_refresh_interval_s=0.05), metrics=metrics)
        keys = authenticator.remote_keys
        assert keys is not None
        caplog.set_level(logging.INFO, logger="changesync.jwks")
        async with refreshing(keys):
            await until(lambda: keys.failed_fetches >= 3, "three failed fetches (no server)")
            assert authenticate(authenticator, idp.token("k1")).subject == "alice"
            with idp.serve():
                await until(lambda: keys.failed_fetches == 0, "the endpoint to answer again")
                idp.status = 503
                await until(lambda: keys.failed_fetches >= 3, "three failed fetches (503)")
                assert authenticate(authenticator, idp.token("k1")).subject == "alice"
        records = [record for record in caplog.records if record.name == "changesync.jwks"]
        warnings = [record.getMessage() for record in records if record.levelno == logging.WARNING]
        assert len(warnings) == 2
        assert warnings[0].startswith(f"cannot fetch the JWKS from {idp.url}: cannot connect (")
        assert warnings[1].startswith(f"cannot fetch the JWKS from {idp.url}: HTTP 503;")
        assert "the 1 keys fetched before stay in use" in warnings[1]
        assert any("answers again, after" in record.getMessage() for record in records)
        assert failures() >= 6

    async def test_a_hung_fetch_holds_no_request(self, idp, caplog):
        """While a fetch waits for an answer, tokens are verified (or refused) at once; the fetch
        gives up after the timeout and the keys stay."""
        keys = RemoteKeySet(idp.url, refresh_interval_s=300, timeout_s=0.3, min_refresh_interval_s=0)
        keys.load()
        idp.hang()
        async with refreshing(keys):
            with pytest.raises(KeyError):
                keys.key_for("k2")
            await until(lambda: len(idp.fetched_at) == 2, "the fetch to reach the server")
            assert keys.failed_fetches == 0
            started = time.monotonic()
            assert keys.key_for("k1") is not None
            with pytest.raises(KeyError):
                keys.key_for("k3")
            assert time.monotonic() - started < 0.05
            await until(lambda: keys.failed_fetches == 1, "the fetch to time out")
        idp.release()
        assert keys.key_ids == ["k1"]
        assert "no answer within 0.3 s" in caplog.text
