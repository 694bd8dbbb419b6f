"""The ceiling: a minimal raw-asyncio server that writes SSE frames to sockets, and nothing else.

    python -m benchmarks.ceiling_server --port P

``GET /flows/{flow}/events`` answers like uvicorn does (HTTP/1.1, chunked ``text/event-stream``) and
registers the socket. ``GET /control/start?rate=R&seconds=S&flows=F&frame_bytes=B`` starts the
generator: R frames per second for S seconds, round-robin over flows ``flow-0`` … ``flow-{F-1}``,
each ``B`` bytes long, shaped like a changesync ``LOG_STREAM`` frame and stamped with ``"t0"`` (the
server's ``time.time_ns()``), written once per frame to every socket of its flow with
``transport.write``; when it falls behind, it stops on time (frames not written by then are never
written, as a saturated server would deliver less). No database, no HTTP framework, no per-client
task, no queue, no backpressure: what one Python process can push through the same event loop to
the same sockets, one write per frame and socket.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import urllib.parse

from ._common import raise_fd_limit

RESPONSE_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-store\r\n"
    b"connection: keep-alive\r\n"
    b"x-accel-buffering: no\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
OPENING = b"retry: 3000\n\n"
# An id as long as changesync's: "H" + the base64 of a ~69-byte resume token.
EVENT_ID = b"H" + b"gmkKZ0AAAAACKwIsAQAAAGZkX2lkAGRnD4xtqZHs0G3H9cYKQNYwAAWhvcGVyYXRpb25UeXBlAAZpbnNlcnQAAA"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def make_frame(flow: bytes, t0: int, frame_bytes: int) -> bytes:
    head = (
        b"event: LOG_STREAM\nid: "
        + EVENT_ID
        + b'\ndata: {"type":"LOG_STREAM","flowId":"'
        + flow
        + b'","collection":"flow_logs","operation":"insert","document":{"t0":"'
        + str(t0).encode()
        + b'","chunk":"'
    )
    tail = b'"}}\n\n'
    return head + b"x" * max(0, frame_bytes - len(head) - len(tail)) + tail


class Hub:
    def __init__(self) -> None:
        self.flows: dict[bytes, set[asyncio.Transport]] = {}
        self.generator: asyncio.Task[None] | None = None
        self.frames_sent = 0

    async def generate(self, rate: float, seconds: float, flows: int, frame_bytes: int) -> None:
        loop = asyncio.get_running_loop()
        names = [f"flow-{index}".encode() for index in range(flows)]
        started = loop.time()
        deadline = started + seconds
        index = 0
        while loop.time() < deadline:
            # Always yield: other connections (and the loop's own callbacks) get their turn, as in a server.
            await asyncio.sleep(max(0.0, started + index / rate - loop.time()))
            flow = names[index % flows]
            index += 1
            data = chunk(make_frame(flow, time.time_ns(), frame_bytes))
            for transport in self.flows.get(flow, ()):
                transport.write(data)
            self.frames_sent += 1


class Handler(asyncio.Protocol):
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.flow: bytes | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.flow is not None:
            return
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer:
            return
        assert self.transport is not None
        target = self.buffer.split(b" ", 2)[1].decode()
        path, _, query = target.partition("?")
        parts = path.split("/")
        if len(parts) == 4 and parts[1] == "flows" and parts[3] == "events":
            self.flow = parts[2].encode()
            self.hub.flows.setdefault(self.flow, set()).add(self.transport)
            self.transport.write(RESPONSE_HEAD + chunk(OPENING))
            return
        if path == "/control/start":
            options = dict(urllib.parse.parse_qsl(query))
            self.hub.generator = asyncio.get_running_loop().create_task(
                self.hub.generate(
                    float(options["rate"]),
                    float(options["seconds"]),
                    int(options["flows"]),
                    int(options["frame_bytes"]),
                )
            )
            self._reply(b"started")
        elif path == "/stats":
            clients = sum(len(transports) for transports in self.hub.flows.values())
            self._reply(b'{"clients":%d,"frames_sent":%d}' % (clients, self.hub.frames_sent))
        else:
            self._reply(b"ok")

    def _reply(self, body: bytes) -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.flow is not None and self.transport is not None:
            self.hub.flows.get(self.flow, set()).discard(self.transport)


async def serve(port: int) -> None:
    hub = Hub()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Handler(hub), "127.0.0.1", port, backlog=8192)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ceiling_server")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    raise_fd_limit(1 << 20)
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
