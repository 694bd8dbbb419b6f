"""The naive design, as tutorials write it: one change stream per SSE request, each change as JSON.

Starlette + sse-starlette; ``GET /flows/{flow_id}/events`` opens its own
``await db.watch([{"$match": {"fullDocument.flowId": flow_id}}])`` and yields every change through
``json.dumps(change, default=str)``. No filtering, no shared stream, no queue bounds. ``/stats``
counts the change streams this process holds open (the benchmark compares it with the server's view).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from pymongo import AsyncMongoClient
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def create_naive_app(uri: str, database: str) -> Starlette:
    open_streams = 0

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
        try:
            yield {"db": client[database]}
        finally:
            await client.close()

    async def events(request: Request) -> Response:
        flow_id = request.path_params["flow_id"]
        db = request.state.db

        async def changes() -> AsyncIterator[dict[str, str]]:
            nonlocal open_streams
            async with await db.watch([{"$match": {"fullDocument.flowId": flow_id}}]) as stream:
                open_streams += 1
                try:
                    async for change in stream:
                        yield {"event": "LOG_STREAM", "data": json.dumps(change, default=str)}
                finally:
                    open_streams -= 1

        return EventSourceResponse(changes())

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def stats(request: Request) -> Response:
        return JSONResponse({"open_change_streams": open_streams})

    return Starlette(
        routes=[
            Route("/flows/{flow_id}/events", events),
            Route("/healthz", healthz),
            Route("/stats", stats),
        ],
        lifespan=lifespan,
    )
