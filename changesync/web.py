"""The HTTP endpoints and the security headers every response carries."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, TypedDict

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import Authenticator, Authorizer
from .delivering.broadcast import Subscriber
from .delivering.joins import Join, Joins, opening_frame
from .delivering.stream import EventStream, OpenStreams
from .errors import AuthenticationError, HubUnavailableError, PublishRefusedError, SourceError
from .frames import FLOW_ID_PATTERN, FLOW_ID_RULE
from .hub import Hub
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .producing.publishing import EventPublisher, RateLimiter
from .schema import SCHEMA_PATH
from .settings import Settings
from .status import Status

# ?updates=: "full" sends updates with their whole document (a bare EventSource keeps a copy from
# them alone); "patch" sends the patch without the document wherever the update has one.
UPDATE_MODES = ("full", "patch")
# Our ids are a few hundred characters; anything far longer is not one of ours.
MAX_EVENT_ID_LENGTH = 4096
# Limits on what a client may send: flow ids, tokens and ids fit easily.
MAX_TARGET_BYTES = 8 * 1024
MAX_HEADER_BYTES = 16 * 1024
# Readiness also fails when the stream has not polled for this many await periods.
STALL_FACTOR = 5
MINIMUM_STALL_S = 5.0
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class State(TypedDict):
    settings: Settings
    hub: Hub
    metrics: Metrics
    status: Status
    joins: Joins
    authenticator: Authenticator
    authorizer: Authorizer
    event_types: frozenset[str]
    streams: OpenStreams
    target: str
    """The deployment watched, for messages: the redacted URI and the database."""
    publisher: EventPublisher
    publish_rate: RateLimiter


def error(status_code: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status_code, headers=headers)


def _flag(value: str | None) -> bool | None:
    if value is None:
        return None
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ValueError(value)


async def flow_events(request: Request) -> Response | EventStream:
    state: State = request.scope["state"]
    settings = state["settings"]
    flow_id = request.path_params["flow_id"]
    if not FLOW_ID_PATTERN.fullmatch(flow_id):
        return error(400, "invalid flow id", expected=FLOW_ID_RULE)
    try:
        principal = state["authenticator"].authenticate(request.headers, request.cookies, request.query_params)
    except AuthenticationError as exc:
        return error(401, "unauthorized", detail=exc.message, headers={"WWW-Authenticate": "Bearer"})
    types: frozenset[str] | None = None
    if "types" in request.query_params:
        types = frozenset(name.strip() for name in request.query_params["types"].split(",") if name.strip())
        unknown = sorted(types - state["event_types"])
        if unknown or not types:
            return error(400, "unknown event type", unknown=unknown, known=sorted(state["event_types"]))
    try:
        snapshot = _flag(request.query_params.get("snapshot"))
    except ValueError:
        return error(400, "invalid snapshot flag", expected="true or false")
    updates = request.query_params.get("updates", "full")
    if updates not in UPDATE_MODES:
        return error(400, "invalid updates mode", expected=" or ".join(UPDATE_MODES))
    last_event_id = request.headers.get("last-event-id") or request.query_params.get("lastEventId")
    if last_event_id is not None and len(last_event_id) > MAX_EVENT_ID_LENGTH:
        return error(400, "invalid last event id", expected=f"at most {MAX_EVENT_ID_LENGTH} characters")
    hub, metrics, limits = state["hub"], state["metrics"], settings.limits
    broker = hub.broker
    if broker.subscriber_count >= limits.max_connections:
        return error(429, "too many connections", headers={"Retry-After": "5"})
    if broker.count_for(principal.subject) >= limits.max_connections_per_subject and not principal.is_service:
        return error(429, "too many connections for this subject", headers={"Retry-After": "5"})
    if (refusal := state["status"].refusal()) is not None:
        return error(503, refusal, headers={"Retry-After": "1"})
    try:
        allowed = await state["authorizer"].allowed(principal, flow_id)
    except SourceError:
        metrics.authorization_errors.inc()
        return error(503, "authorization unavailable", headers={"Retry-After": "1"})
    if not allowed:
        return error(403, "forbidden", detail="this subject may not read this flow")

    stream = settings.stream
    try:
        subscriber, plan = await state["joins"].join(
            Join(flow_id, types=types, last_event_id=last_event_id, snapshot=snapshot), subject=principal.subject
        )
    except HubUnavailableError as exc:
        return error(503, "hub unavailable", detail=exc.cause, headers={"Retry-After": "1"})
    subscriber.unrestricted = principal.is_service
    subscriber.patch_only = updates == "patch"
    subscriber.expires_at = principal.expires_at
    metrics.clients_connected.inc()

    def closed(subscriber: Subscriber) -> None:
        hub.unsubscribe(subscriber)
        metrics.clients_connected.dec()

    async def prologue() -> AsyncGenerator[bytes, None]:
        yield opening_frame(stream.retry_ms)
        async for data in state["joins"].prologue(subscriber, plan):
            yield data

    return EventStream(
        subscriber,
        prologue(),
        send_timeout_s=stream.send_timeout_s,
        retry_ms=stream.retry_ms,
        on_close=closed,
        streams=state["streams"],
    )


async def publish_event(request: Request) -> Response:
    """``POST /flows/{flowId}/events``: an event that is not a database write, from a back-end service."""
    state: State = request.scope["state"]
    settings, metrics, publisher = state["settings"], state["metrics"], state["publisher"]

    def refuse(status: int, reason: str, message: str, *, counted: bool = False, **extra: Any) -> Response:
        """A refusal: ``reason`` (a stable code, also the metric's label) beside the human ``error``."""
        if not counted:
            metrics.labelled(metrics.publish_refused, reason).inc()
        return error(status, message, reason=reason, **extra)

    if not publisher.enabled:
        return refuse(
            405,
            "off",
            "Method Not Allowed",
            detail="publishing is off: list the event types in publish.event_types",
            headers={"Allow": "GET"},
        )
    flow_id = request.path_params["flow_id"]
    if not FLOW_ID_PATTERN.fullmatch(flow_id):
        return refuse(400, "invalid-flow", "invalid flow id", expected=FLOW_ID_RULE)
    try:
        principal = state["authenticator"].authenticate(request.headers, request.cookies, request.query_params)
    except AuthenticationError as exc:
        return refuse(401, "unauthorized", "unauthorized", detail=exc.message, headers={"WWW-Authenticate": "Bearer"})
    role = settings.publish.role
    if not principal.anonymous and role not in principal.roles:
        return refuse(403, "forbidden", "forbidden", detail=f"publishing needs a token with the role {role!r}")
    if not state["publish_rate"].allow(principal.subject):
        rate = settings.publish.rate_per_s
        return refuse(429, "too-fast", "too many events", detail=f"at most {rate:g}/s", headers={"Retry-After": "1"})
    limit = settings.limits.max_event_bytes
    body = await _read_body(request, limit)
    if body is None:
        detail = f"larger than {limit} bytes"
        return refuse(413, "too-large", "request body too large", detail=detail, limit_bytes=limit)
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return refuse(400, "not-json", "the body is not JSON")
    try:
        published = await publisher.publish(flow_id, document)
    except PublishRefusedError as exc:  # counted by the publisher
        return refuse(exc.status, exc.reason, exc.reason, counted=True, detail=exc.detail)
    except HubUnavailableError as exc:
        return refuse(503, "unavailable", "hub unavailable", detail=exc.cause, headers={"Retry-After": "1"})
    return JSONResponse({"id": published.id, "type": published.event_type, "flowId": flow_id}, status_code=202)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or ``None`` as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    state: State = request.scope["state"]
    ready, body = state["status"].readiness()
    return JSONResponse(body, status_code=200 if ready else 503)


async def metrics_endpoint(request: Request) -> Response:
    state: State = request.scope["state"]
    state["metrics"].stream_lag_seconds.set(state["status"].lag_s)
    return Response(state["metrics"].render(), media_type=CONTENT_TYPE_LATEST)


async def events_schema(request: Request) -> Response:
    """The JSON Schema of every event payload (generated from ``changesync.payloads``); no authentication."""
    return FileResponse(SCHEMA_PATH, media_type="application/schema+json", headers={"Cache-Control": "no-cache"})


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, exc.detail)


async def internal_error(request: Request, exc: Exception) -> Response:
    """An unexpected error: a JSON 500. Starlette sends it from outside ``HttpGuard``, so the security
    headers are set here. The exception itself is logged by the server, never sent."""
    response = error(500, "internal error")
    response.raw_headers.extend(SECURITY_HEADERS)
    return response


class HttpGuard:
    """Refuses over-long request targets and header blocks; adds ``SECURITY_HEADERS`` to every response
    that does not set the header itself (the demo page brings its own content security policy)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        target_bytes = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        header_bytes = sum(len(name) + len(value) for name, value in scope["headers"])
        refusal = None
        if target_bytes > MAX_TARGET_BYTES:
            refusal = error(414, "request target too long", limit_bytes=MAX_TARGET_BYTES)
        elif header_bytes > MAX_HEADER_BYTES:
            refusal = error(431, "request headers too large", limit_bytes=MAX_HEADER_BYTES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                own = {name.lower() for name, _ in headers}
                message["headers"] = [*headers, *(header for header in SECURITY_HEADERS if header[0] not in own)]
            await send(message)

        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
        else:
            await self.app(scope, receive, send_with_headers)
