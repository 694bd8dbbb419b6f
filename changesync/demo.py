"""``changesync demo``: the embedded database, the service, a scripted writer and the live page
(``changesync.demo_page``), in one command.

The writer plays the flow-editor: it edits a canvas, runs an execution and streams LLM log chunks
into MongoDB with plain PyMongo calls. It also writes things clients must never see (a private
flow, secrets, credentials, ``_``-prefixed fields), so the output shows the filters at work.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import itertools
import logging
import random
import secrets
import sys
import time
from typing import Any

import jwt

from .app import create_app
from .check import run_check
from .demo_page import PAGE_PREFIX
from .embedded import EmbeddedServer
from .mongo import RawDatabase, open_database
from .server import Server, make_server, tune_garbage_collection
from .settings import Settings

logger = logging.getLogger(__name__)

DEMO_FLOW_ID = "demo-flow"
DEMO_SUBJECT = "demo-user"
DEMO_TOKEN_LIFETIME_S = 3600
STEP_INTERVAL_S = 0.7
# The canvas's nodes sit in this many rows, this far apart, so that the page shows them side by side.
NODE_ROWS = 3
ROW_SPACING = 120


def _node(index: int) -> dict[str, Any]:
    return {
        "id": f"n{index}",
        "type": "llm" if index % 2 else "http",
        "position": {"x": 120 * index, "y": 80 + ROW_SPACING * (index % NODE_ROWS)},
        "data": {"label": f"Step {index}", "credentials": {"apiKey": f"sk-demo-{index}"}},
    }


def _edge(source: int) -> dict[str, Any]:
    return {"id": f"e{source}", "source": f"n{source}", "target": f"n{source + 1}"}


async def seed(database: RawDatabase, flow_id: str = DEMO_FLOW_ID) -> None:
    now = datetime.datetime.now(datetime.UTC)
    await database.flowboards.replace_one(
        {"_id": flow_id},
        {
            "_id": flow_id,
            "name": "Demo flow",
            "ownerId": DEMO_SUBJECT,
            "members": [],
            "nodes": [_node(i) for i in range(3)],
            "edges": [_edge(0), _edge(1)],
            "viewport": {"x": 0, "y": 0, "zoom": 1},
            "secrets": {"webhookToken": "never-sent"},
            "__v": 0,
            "updatedAt": now,
        },
        upsert=True,
    )
    await database.flowboards.replace_one(
        {"_id": "private-flow"},
        {"_id": "private-flow", "name": "Not for clients", "visibility": "private", "nodes": []},
        upsert=True,
    )


async def write_forever(
    database: RawDatabase, flow_id: str = DEMO_FLOW_ID, *, step_interval_s: float = STEP_INTERVAL_S
) -> None:
    """Edit the canvas, run executions and stream logs, one step every ``step_interval_s``; every
    third run adds a node and the edge to it."""
    await seed(database, flow_id)
    node_count = 3
    for run in itertools.count(1):
        for index in range(node_count):
            await database.flowboards.update_one(
                {"_id": flow_id},
                {"$set": {f"nodes.{index}.position.x": random.randint(0, 800), "_lastEditor": "demo"}},
            )
            await asyncio.sleep(step_interval_s)
        execution = await database.flow_executions.insert_one(
            {"flowId": flow_id, "run": run, "status": "running", "layers": [], "nodes": {}, "_worker": "demo-1"}
        )
        for index in range(node_count):
            node_id = f"n{index}"
            await database.flow_executions.update_one(
                {"_id": execution.inserted_id},
                {"$set": {f"nodes.{node_id}": {"status": "running"}}, "$push": {"layers": index}},
            )
            for seq, word in enumerate(f"Node {node_id} of run {run} says hello".split()):
                await database.flow_logs.insert_one(
                    {
                        "flowId": flow_id,
                        "executionId": str(execution.inserted_id),
                        "nodeId": node_id,
                        "seq": seq,
                        "chunk": word + " ",
                    }
                )
                await asyncio.sleep(step_interval_s / 4)
            await database.flow_executions.update_one(
                {"_id": execution.inserted_id}, {"$set": {f"nodes.{node_id}.status": "succeeded"}}
            )
        await database.flow_executions.update_one({"_id": execution.inserted_id}, {"$set": {"status": "succeeded"}})
        if run % 3 == 0:
            await database.flowboards.update_one(
                {"_id": flow_id}, {"$push": {"nodes": _node(node_count), "edges": _edge(node_count - 1)}}
            )
            node_count += 1
        await asyncio.sleep(step_interval_s)


def with_demo_auth(settings: Settings) -> tuple[Settings, str | None]:
    """Auth stays on in the demo: a fresh secret, and a short-lived token for the demo user."""
    if settings.auth.mode == "none":
        return settings, None
    secret = settings.auth.jwt_secret or secrets.token_urlsafe(32)
    auth = dataclasses.replace(settings.auth, jwt_secret=secret, jwt_public_key_file="", jwks_file="", jwks_url="")
    now = int(time.time())
    claims = {"sub": DEMO_SUBJECT, "iat": now, "exp": now + DEMO_TOKEN_LIFETIME_S}
    if auth.issuer:
        claims["iss"] = auth.issuer
    if auth.audience:
        claims["aud"] = auth.audience
    return dataclasses.replace(settings, auth=auth), jwt.encode(claims, secret, algorithm="HS256")


def page_url(settings: Settings, token: str | None) -> str:
    """The live page's address; the token goes in the fragment, which the browser never sends."""
    url = f"http://{settings.host}:{settings.port}{PAGE_PREFIX}"
    return url if token is None else f"{url}#token={token}"


def banner(settings: Settings, token: str | None, flow_id: str = DEMO_FLOW_ID) -> str:
    url = f"http://{settings.host}:{settings.port}/flows/{flow_id}/events"
    lines = [
        "",
        "changesync demo is running.",
        f"  MongoDB (embedded):  {settings.redacted_uri}  database {settings.database!r}",
    ]
    if token is None:
        lines += [f"  events of the demo flow:  {url}", f"  watch them:  curl -N {url}"]
    else:
        lines += [
            f"  a token for {DEMO_SUBJECT!r}, valid {DEMO_TOKEN_LIFETIME_S // 60} minutes:",
            f"    {token}",
            f"  in a browser (EventSource):  {url}?access_token={token}",
            f"  watch them:  curl -N -H 'Authorization: Bearer {token}' {url}",
        ]
    lines.append(f"  the live page (canvas, run, LLM output):  {page_url(settings, token)}")
    return "\n".join([*lines, "  Press Ctrl+C to stop.", ""])


async def run_demo(settings: Settings, *, use_embedded: bool) -> int:
    """Run until interrupted; returns the process exit code."""
    embedded = EmbeddedServer() if use_embedded else None
    try:
        if embedded is not None:
            await asyncio.to_thread(embedded.start)
            settings = dataclasses.replace(settings, mongodb_uri=embedded.uri)
        settings, token = with_demo_auth(dataclasses.replace(settings, demo_page=True))
        report = await run_check(settings, fix=True)
        if report.failed:
            print(report.render())
            return 1
        tune_garbage_collection()
        return await _serve_with_writer(make_server(create_app(settings), settings), settings, token)
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


async def _serve_with_writer(web: Server, settings: Settings, token: str | None) -> int:
    database = open_database(settings.mongodb_uri, settings.database)
    writer: asyncio.Task[None] | None = None
    try:
        serving = asyncio.create_task(web.serve())
        while not web.started and not serving.done():  # noqa: ASYNC110 - uvicorn offers a flag, no event
            await asyncio.sleep(0.05)
        if not web.started:
            print(f"changesync demo: could not listen on {settings.host}:{settings.port}", file=sys.stderr)
            return 1
        print(banner(settings, token), flush=True)
        writer = asyncio.create_task(write_forever(database.raw))
        await serving
        return 0
    except SystemExit as exc:
        # uvicorn exits the process when it cannot bind; the embedded server must still be stopped.
        print(f"changesync demo: could not listen on {settings.host}:{settings.port}", file=sys.stderr)
        return int(exc.code or 1)
    finally:
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        await database.close()
