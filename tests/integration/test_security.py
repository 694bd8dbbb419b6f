"""Security over real HTTP: authentication, per-flow authorization, limits, CORS, headers, hostile requests."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import httpx
import jwt
import pytest

from harness import EventStream, run_service, service_settings

SECRET = "a-test-secret-that-is-long-enough!"


def token(subject: str = "alice", *, lifetime_s: int = 300, **claims) -> str:
    now = int(time.time())
    return jwt.encode({"sub": subject, "exp": now + lifetime_s, **claims}, SECRET, algorithm="HS256")


def bearer(subject: str = "alice", **claims) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(subject, **claims)}"}


@pytest.fixture
def secure_settings(mongo_backend, database_name):
    return service_settings(
        mongo_backend.uri,
        database_name,
        auth={"mode": "jwt", "jwt_secret": SECRET, "cache_ttl_s": 0.5},
        limits={"max_connections_per_subject": 3, "max_connections": 6, "request_head_timeout_s": 1.0},
        cors={"allow_origins": ("https://app.example.com",)},
    )


@pytest.fixture
async def service(secure_settings, database):
    await database.flowboards.insert_many(
        [
            {"_id": "alices-flow", "ownerId": "alice", "members": ["bob"]},
            {"_id": "carols-flow", "ownerId": "carol", "members": []},
        ]
    )
    async with run_service(secure_settings) as running:
        yield running


class TestAuthentication:
    @pytest.mark.parametrize(
        ("headers", "detail"),
        [
            ({}, "a bearer token is required"),
            ({"Authorization": "Bearer nope"}, "the token is invalid"),
            ({"Authorization": "Basic YTpi"}, "the Authorization header must be 'Bearer <token>'"),
            ({"Authorization": f"Bearer {token(lifetime_s=-60)}"}, "the token has expired"),
        ],
    )
    async def test_401_with_a_json_body(self, service, headers, detail):
        """Missing, forged or expired tokens get 401, a JSON error and a WWW-Authenticate challenge."""
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(service.events_url("alices-flow"), headers=headers)
        assert response.status_code == 401
        assert response.json() == {"error": "unauthorized", "detail": detail}
        assert response.headers["www-authenticate"] == "Bearer"

    @pytest.mark.parametrize("place", ["header", "cookie", "query"])
    async def test_every_token_source_works(self, service, place):
        """The token is accepted from the Authorization header, the cookie and the access_token parameter."""
        value = token()
        url = service.events_url("alices-flow", snapshot="false")
        headers = {}
        if place == "header":
            headers = {"Authorization": f"Bearer {value}"}
        elif place == "cookie":
            headers = {"Cookie": f"changesync_token={value}"}
        else:
            url += f"&access_token={value}"
        async with EventStream(url, headers=headers) as stream:
            assert stream.status_code == 200

    async def test_token_never_reaches_the_logs(self, service, caplog):
        """Even with request logging on, an access_token in a URL is redacted."""
        from changesync.logs import RedactSecrets

        value = token()
        handler_filter = RedactSecrets()
        logging.getLogger("uvicorn.access").addFilter(handler_filter)
        try:
            with caplog.at_level(logging.INFO, logger="uvicorn.access"):
                async with httpx.AsyncClient(timeout=5) as client:
                    await client.get(service.events_url("carols-flow") + f"?access_token={value}")
        finally:
            logging.getLogger("uvicorn.access").removeFilter(handler_filter)
        assert value not in caplog.text


class TestAuthorization:
    @pytest.mark.parametrize(("subject", "status"), [("alice", 200), ("bob", 200), ("carol", 403), ("mallory", 403)])
    async def test_owner_and_members_only(self, service, subject, status):
        """The owner and the members of a flow may read it; anyone else gets 403."""
        async with EventStream(service.events_url("alices-flow", snapshot="false"), headers=bearer(subject)) as stream:
            assert stream.status_code == status
            if status == 403:
                assert stream.error_body == {"error": "forbidden", "detail": "this subject may not read this flow"}

    async def test_service_role_reads_any_flow(self, service):
        """A service token (roles claim) may read flows it does not own."""
        headers = bearer("backend", roles=["changesync-service"])
        async with EventStream(service.events_url("carols-flow", snapshot="false"), headers=headers) as stream:
            assert stream.status_code == 200

    async def test_revoked_access_closes_the_stream_within_the_ttl(self, service, database):
        """Removing a member ends their open stream with RESYNC access-revoked within the cache TTL."""
        async with EventStream(service.events_url("alices-flow", snapshot="false"), headers=bearer("bob")) as stream:
            await database.flowboards.update_one({"_id": "alices-flow"}, {"$set": {"members": []}})
            started = time.monotonic()
            events = await stream.until_end(timeout_s=5)
            elapsed = time.monotonic() - started
        assert [(e.event, e.data["reason"]) for e in events if e.event == "RESYNC"] == [("RESYNC", "access-revoked")]
        assert elapsed < 0.5 + 1.0  # TTL plus one housekeeping round and the network

    async def test_expired_token_ends_the_stream(self, service):
        """A stream ends with a resumable RESYNC when its token expires."""
        url = service.events_url("alices-flow", snapshot="false")
        async with EventStream(url, headers={"Authorization": f"Bearer {token(lifetime_s=1)}"}) as stream:
            events = await stream.until_end(timeout_s=5 + 10)
        resync = events[-1]
        assert (resync.event, resync.data["reason"], resync.data["resumable"]) == ("RESYNC", "token-expired", True)


class TestLimits:
    async def test_per_subject_and_global_limits(self, service):
        """A subject's 4th stream and the service's 7th get 429 with Retry-After."""
        url = service.events_url("alices-flow", snapshot="false")
        streams = [EventStream(url, headers=bearer("alice")) for _ in range(3)]
        for stream in streams:
            await stream.__aenter__()
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                response = await client.get(url, headers=bearer("alice"))
                assert response.status_code == 429
                assert response.headers["retry-after"] == "5"
                others = [EventStream(url, headers=bearer("bob")) for _ in range(3)]
                for stream in others:
                    await stream.__aenter__()
                try:
                    response = await client.get(url, headers=bearer("bob", roles=["changesync-service"]))
                    assert response.status_code == 429
                    assert response.json()["error"] == "too many connections"
                finally:
                    for stream in others:
                        await stream.__aexit__(None, None, None)
        finally:
            for stream in streams:
                await stream.__aexit__(None, None, None)


class TestHttpHardening:
    async def test_cors_allow_list(self, service):
        """Allowed origins get CORS headers with credentials; others get none; never a wildcard."""
        async with httpx.AsyncClient(base_url=service.base_url, timeout=5) as client:
            preflight = await client.options(
                "/flows/alices-flow/events",
                headers={
                    "Origin": "https://app.example.com",
                    "Access-Control-Request-Method": "GET",
                    "Access-Control-Request-Headers": "authorization,last-event-id",
                },
            )
            assert preflight.status_code == 200
            assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
            assert preflight.headers["access-control-allow-credentials"] == "true"
            denied = await client.options(
                "/flows/alices-flow/events",
                headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "GET"},
            )
            assert "access-control-allow-origin" not in denied.headers
            plain = await client.get("/healthz", headers={"Origin": "https://evil.example.com"})
            assert "access-control-allow-origin" not in plain.headers

    async def test_security_headers_everywhere(self, service):
        """Every response, errors included, carries the security headers."""
        async with httpx.AsyncClient(base_url=service.base_url, timeout=5) as client:
            for path in ("/healthz", "/flows/alices-flow/events", "/nowhere"):
                response = await client.get(path)
                assert response.headers["x-content-type-options"] == "nosniff"
                assert response.headers["x-frame-options"] == "DENY"
                assert response.headers["content-security-policy"].startswith("default-src 'none'")
                assert response.headers["referrer-policy"] == "no-referrer"

    async def test_wrong_methods(self, service):
        """With publishing off only GET is served; other methods get a JSON 405."""
        async with httpx.AsyncClient(base_url=service.base_url, timeout=5) as client:
            for method in ("POST", "PUT", "DELETE"):
                response = await client.request(method, "/flows/alices-flow/events")
                assert response.status_code == 405, method
                assert response.json()["error"] == "Method Not Allowed"

    @pytest.mark.parametrize(
        ("path", "headers", "statuses"),
        [
            ("/flows/" + "a" * 20_000 + "/events", {}, {400, 414, 431}),
            ("/flows/ok/events", {"X-Big": "b" * 70_000}, {400, 431}),
            ("/flows/..%2F..%2Fetc/events", {}, {400, 401, 404}),
            ("/flows/%00/events", {}, {400}),
        ],
    )
    async def test_hostile_urls_and_headers(self, service, path, headers, statuses):
        """Over-long URLs and headers, traversal and NUL bytes are refused at once, never served."""
        async with httpx.AsyncClient(base_url=service.base_url, timeout=5) as client:
            try:
                response = await client.get(path, headers=headers)
            except httpx.RemoteProtocolError:
                return  # the server closed the connection: refused as well
        assert response.status_code in statuses

    async def test_idle_connection_without_a_request_is_closed(self, service):
        """A slowloris-style connection that never completes its request is dropped by the server."""
        with socket.create_connection(("127.0.0.1", service.settings.port)) as raw:
            raw.sendall(b"GET /flows/x/events HTTP/1.1\r\nHost: x\r\n")  # no blank line: never finished
            raw.settimeout(15)
            started = time.monotonic()
            data = await asyncio.to_thread(raw.recv, 1024)
        assert data == b"" or data.startswith(b"HTTP/1.1 4"), data
        assert time.monotonic() - started < 1.0 + 2.0
