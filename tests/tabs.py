"""Simulated browser tabs and writers for the tests that run services as processes and kill them.

A ``Tab`` reads one flow's stream and reconnects with ``Last-Event-ID`` like a browser's
``EventSource``; a ``LogWriter`` writes numbered chunks and remembers when. Imported by tests as
``tabs`` (``tests/`` is on ``sys.path``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jsonpatch
from pymongo.errors import OperationFailure

# A browser's EventSource waits `retry:` ms before reconnecting; the tests retry faster.
RECONNECT_DELAY_S = 0.1
END = "end-of-test"
# Upper bound for any wait of a scenario.
SCENARIO_TIMEOUT_S = 40.0


async def until(predicate: Callable[[], bool], what: str, timeout_s: float = SCENARIO_TIMEOUT_S) -> None:
    """Poll ``predicate`` (cheap, in-memory) until it holds; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass
class Message:
    event: str
    id: str | None
    data: str


class SseParser:
    """The parsing half of a browser's EventSource (WHATWG HTML, "Interpreting an event stream")."""

    def __init__(self, last_id: str | None = None) -> None:
        self.last_id = last_id
        """The source's last event id: set on every dispatch, id-only blocks included."""
        self.retry_ms: int | None = None
        self.comments: list[str] = []
        self.raw = bytearray()
        self._pending = b""
        self._event = ""
        self._data: list[str] = []
        self._id_buffer = last_id

    def feed(self, chunk: bytes) -> list[Message]:
        self.raw += chunk
        self._pending += chunk
        messages = []
        while (index := self._pending.find(b"\n")) >= 0:
            line = self._pending[:index].rstrip(b"\r").decode("utf-8")
            self._pending = self._pending[index + 1 :]
            message = self._line(line)
            if message is not None:
                messages.append(message)
        return messages

    def _line(self, line: str) -> Message | None:
        if not line:
            self.last_id = self._id_buffer
            event, data = self._event or "message", self._data
            self._event, self._data = "", []
            return Message(event, self.last_id, "\n".join(data)) if data else None
        if line.startswith(":"):
            self.comments.append(line[1:].strip())
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id_buffer = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None


class CanvasCopy:
    """A client's copy of one flowboard, kept from SYNC_CANVAS events like the browser client of docs/protocol.md."""

    def __init__(self) -> None:
        self.document: dict[str, Any] | None = None
        self.events = 0

    def apply(self, data: dict[str, Any]) -> None:
        self.events += 1
        if data["operation"] in ("insert", "replace"):
            self.document = data["document"]
        elif data["operation"] == "update":
            assert data["patch"] is not None, f"update without a patch: {data}"
            self.document = jsonpatch.apply_patch(self.document, data["patch"])
            assert self.document == data["document"], "the patch applied to the previous copy must give the new one"
        else:
            self.document = None


@dataclass
class Connection:
    opened_at: float
    seqs: list[int] = field(default_factory=list)
    ended_by: str = "running"


class Tab:
    """One browser tab on one flow: reads the stream and reconnects with ``Last-Event-ID`` until the end marker.

    ``url()`` is asked again on every attempt; a refused connection, a non-200 answer or a stream that
    ends is retried after RECONNECT_DELAY_S, like EventSource (which would wait ``retry:`` ms instead).
    """

    def __init__(self, name: str, flow_id: str, url: Callable[[], str]) -> None:
        self.name = name
        self.flow_id = flow_id
        self.url = url
        self.last_id: str | None = None
        self.seqs: list[int] = []
        self.ids: list[str] = []
        self.canvas = CanvasCopy()
        self.resyncs: list[dict[str, Any]] = []
        self.foreign: list[dict[str, Any]] = []
        self.connections: list[Connection] = []
        self.refused = 0
        self.done = asyncio.Event()

    async def run(self, http: httpx.AsyncClient) -> None:
        while not self.done.is_set():
            headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
            connection: Connection | None = None
            try:
                async with http.stream("GET", self.url(), headers=headers) as response:
                    if response.status_code != 200:
                        self.refused += 1
                    else:
                        connection = Connection(time.monotonic())
                        self.connections.append(connection)
                        await self._read(response, connection)
            except httpx.TransportError as exc:
                if connection is None:
                    self.refused += 1
                else:
                    connection.ended_by = type(exc).__name__
            if not self.done.is_set():
                await asyncio.sleep(RECONNECT_DELAY_S)

    async def _read(self, response: httpx.Response, connection: Connection) -> None:
        parser = SseParser(self.last_id)
        async for chunk in response.aiter_raw():
            for message in parser.feed(chunk):
                self._handle(message, connection)
                if self.done.is_set():
                    connection.ended_by = "done"
                    return
            self.last_id = parser.last_id
        self.last_id = parser.last_id
        connection.ended_by = "eof"

    def _handle(self, message: Message, connection: Connection) -> None:
        data = json.loads(message.data)
        assert message.id is not None
        if message.event != "RESYNC":  # a RESYNC without an id repeats the last one, as EventSource keeps it
            self.ids.append(message.id)
        if data.get("flowId") != self.flow_id:
            self.foreign.append(data)
        elif message.event == "RESYNC":
            self.resyncs.append(data)
        elif message.event == "SYNC_CANVAS":
            self.canvas.apply(data)
        elif message.event == "LOG_STREAM":
            document = data["document"]
            if document.get("chunk") == END:
                self.done.set()
            else:
                self.seqs.append(document["seq"])
                connection.seqs.append(document["seq"])


class LogWriter:
    """Inserts numbered log chunks for some flows, and canvas edits for one, recording when each was written."""

    def __init__(self, database: Any, flows: list[str], *, canvas_flow: str | None = None) -> None:
        self.database = database
        self.flows = flows
        self.canvas_flow = canvas_flow
        self.counts = dict.fromkeys(flows, 0)
        self.written_at: dict[str, list[float]] = {flow: [] for flow in flows}
        self.canvas_edits = 0

    async def log(self, flow_id: str, *, padding: int = 0) -> None:
        seq = self.counts[flow_id]
        chunk = f"chunk {seq} " + "x" * padding
        await self.database.flow_logs.insert_one(
            {"flowId": flow_id, "executionId": "x1", "nodeId": "n0", "seq": seq, "chunk": chunk}
        )
        self.written_at[flow_id].append(time.monotonic())
        self.counts[flow_id] = seq + 1

    async def edit_canvas(self, step: int) -> None:
        """One of: a $set, a $push of a node with credentials, a change to denied fields only (no event)."""
        boards, flow_id = self.database.flowboards, self.canvas_flow
        kind = self.canvas_edits % 3
        if kind == 0:
            await boards.update_one({"_id": flow_id}, {"$set": {"nodes.0.position.x": step, "viewport.zoom": step}})
        elif kind == 1:
            node = {"id": f"n{step}", "data": {"label": f"L{step}", "credentials": {"apiKey": "sk-live"}}}
            await boards.update_one({"_id": flow_id}, {"$push": {"nodes": node}})
        else:
            await boards.update_one({"_id": flow_id}, {"$set": {"secrets.token": f"t{step}", "_internalRev": step}})
        self.canvas_edits += 1

    async def end(self) -> None:
        for flow_id in self.flows:
            await self.database.flow_logs.insert_one({"flowId": flow_id, "chunk": END})

    def written_between(self, flow_id: str, start: float, stop: float) -> int:
        return sum(start <= at <= stop for at in self.written_at[flow_id])


async def change_stream_cursors(database: Any) -> int | None:
    """Change stream cursors open on ``database`` (tailable aggregates), or None when the server lists none.

    MongoDB lists idle cursors through the ``$currentOp`` stage, SecantusDB through the ``currentOp``
    command with ``$all``; the union of both, by cursor id, counts each cursor once.
    """
    admin = database.client.admin
    ops: list[dict[str, Any]] = []
    with contextlib.suppress(OperationFailure):
        ops += (await admin.command({"currentOp": 1, "$all": True}))["inprog"]
    with contextlib.suppress(OperationFailure):
        cursor = await admin.aggregate([{"$currentOp": {"allUsers": True, "idleCursors": True}}])
        ops += await cursor.to_list()
    cursors = set()
    for op in ops:
        details = {**(op.get("cursor") or {}), **op}
        if op.get("ns") == f"{database.name}.$cmd.aggregate" and details.get("tailable") and details.get("cursorId"):
            cursors.add(details["cursorId"])
    return len(cursors) or None
