"""Typical change events, shaped as PyMongo decodes them (bson types, resume token, cluster time).

- a canvas update: ``$set nodes.3.position.x`` on a ``flowboards`` document of 20 nodes, each with
  ``data.credentials``, plus board ``secrets`` and ``__v``, with its pre-image;
- an execution update: one node of a 20-node run finishes, with its pre-image;
- a log chunk insert: one LLM output chunk in ``flow_logs``.

Update descriptions carry ``disambiguatedPaths``, as MongoDB 7.0 and later send them to a stream
opened with ``showExpandedEvents`` (the service's). ``update_sequence`` gives consecutive updates of
one document, each with the pre-image the server
would send (the state the previous one left): a node being dragged, an execution progressing.
"""

from __future__ import annotations

import copy
import datetime
import random
from typing import Any

from bson import Int64, ObjectId, Timestamp

FLOW_ID = "flow-bench-0001"
NODE_COUNT = 20
# A chunk of LLM output as the demo writes them: a few words.
CHUNK_TEXT = "The quick brown fox jumps over the lazy dog; tokens stream in. "
# Resume tokens from mongod are upper-case hex, about 70 bytes for a collection with ObjectId keys.
TOKEN_BYTES = 69


def _now() -> datetime.datetime:
    return datetime.datetime(2026, 11, 26, 17, 46, 21, 381000)


def _token(rng: random.Random) -> dict[str, str]:
    return {"_data": "82" + rng.randbytes(TOKEN_BYTES).hex().upper()}


def _envelope(rng: random.Random, collection: str, operation: str, document_id: Any) -> dict[str, Any]:
    return {
        "_id": _token(rng),
        "operationType": operation,
        "clusterTime": Timestamp(1795715181, rng.randint(1, 50)),
        "wallTime": _now(),
        "ns": {"db": "flow_editor", "coll": collection},
        "documentKey": {"_id": document_id},
    }


def flowboard(rng: random.Random) -> dict[str, Any]:
    owner = ObjectId()
    nodes = []
    for index in range(NODE_COUNT):
        nodes.append(
            {
                "id": f"n{index}",
                "type": ("http", "llm", "code", "switch")[index % 4],
                "position": {"x": 120.0 + 180 * (index % 5), "y": 80.0 + 140 * (index // 5)},
                "width": 180,
                "height": 64,
                "selected": False,
                "data": {
                    "label": f"Step {index}",
                    "config": {
                        "url": f"https://api.example.com/v1/resource/{index}",
                        "method": "POST",
                        "timeoutMs": Int64(30_000),
                        "retries": 3,
                        "headers": {"Content-Type": "application/json", "X-Trace": rng.randbytes(8).hex()},
                    },
                    "credentials": {"apiKey": "sk-" + rng.randbytes(16).hex(), "oauthToken": rng.randbytes(24).hex()},
                },
            }
        )
    edges = [
        {"id": f"e{index}", "source": f"n{index}", "target": f"n{index + 1}", "animated": False}
        for index in range(NODE_COUNT - 1)
    ]
    return {
        "_id": FLOW_ID,
        "name": "Benchmark flow",
        "ownerId": owner,
        "members": [ObjectId(), ObjectId()],
        "visibility": "team",
        "nodes": nodes,
        "edges": edges,
        "viewport": {"x": 0, "y": 0, "zoom": 1.0},
        "secrets": {"webhookSecret": rng.randbytes(16).hex()},
        "__v": 41,
        "createdAt": _now() - datetime.timedelta(days=3),
        "updatedAt": _now(),
    }


def canvas_update(rng: random.Random) -> dict[str, Any]:
    """``$set: {"nodes.3.position.x": 412.5, "updatedAt": now}`` on a 20-node board, with the pre-image."""
    before = flowboard(rng)
    change = _envelope(rng, "flowboards", "update", FLOW_ID)
    change["updateDescription"] = {
        "updatedFields": {"nodes.3.position.x": 412.5, "updatedAt": _now()},
        "removedFields": [],
        "truncatedArrays": [],
        "disambiguatedPaths": {},
    }
    change["fullDocumentBeforeChange"] = before
    return change


def execution(rng: random.Random) -> dict[str, Any]:
    started = _now() - datetime.timedelta(seconds=12)
    nodes = {}
    for index in range(NODE_COUNT):
        done = index < 4
        nodes[f"n{index}"] = {
            "status": "success" if done else "waiting",
            "startedAt": started if done else None,
            "finishedAt": started + datetime.timedelta(seconds=index) if done else None,
            "output": {"items": index, "bytes": Int64(1024 * index)} if done else None,
        }
    return {
        "_id": ObjectId(),
        "flowId": FLOW_ID,
        "run": 7,
        "status": "running",
        "triggeredBy": ObjectId(),
        "startedAt": started,
        "layers": [[f"n{index}"] for index in range(NODE_COUNT)],
        "nodes": nodes,
        "__v": 9,
    }


def execution_update(rng: random.Random) -> dict[str, Any]:
    """Node ``n4`` of a running 20-node execution finishes, with the pre-image."""
    before = execution(rng)
    change = _envelope(rng, "flow_executions", "update", before["_id"])
    change["updateDescription"] = {
        "updatedFields": {
            "nodes.n4.status": "success",
            "nodes.n4.startedAt": _now() - datetime.timedelta(seconds=2),
            "nodes.n4.finishedAt": _now(),
            "nodes.n4.output": {"items": 4, "bytes": Int64(4096)},
        },
        "removedFields": [],
        "truncatedArrays": [],
        "disambiguatedPaths": {},
    }
    change["fullDocumentBeforeChange"] = before
    return change


def log_chunk_document(
    flow_id: str, seq: int, *, execution_id: ObjectId | None = None, t0: int | None = None
) -> dict[str, Any]:
    """A ``flow_logs`` document as the demo writes them (``t0``: the writer's clock, for latency)."""
    document: dict[str, Any] = {
        "flowId": flow_id,
        "executionId": execution_id or ObjectId(),
        "nodeId": "n4",
        "seq": seq,
        "chunk": CHUNK_TEXT,
        "createdAt": _now(),
    }
    if t0 is not None:
        document["t0"] = t0
    return document


def log_chunk_insert(rng: random.Random) -> dict[str, Any]:
    document = {"_id": ObjectId(), **log_chunk_document(FLOW_ID, 118)}
    change = _envelope(rng, "flow_logs", "insert", document["_id"])
    change["fullDocument"] = document
    return change


def update_sequence(name: str, count: int, seed: int = 7) -> list[dict[str, Any]]:
    """``count`` consecutive updates of the document of the typical update ``name``."""
    base = typical_events(seed)[name]
    rng = random.Random(seed)
    before = base["fullDocumentBeforeChange"]
    changes = []
    for index in range(count):
        after = copy.deepcopy(before)
        if name == "canvas update":
            fields: dict[str, Any] = {"nodes.3.position.x": 100.0 + index, "updatedAt": _now()}
            after["nodes"][3]["position"]["x"] = fields["nodes.3.position.x"]
            after["updatedAt"] = fields["updatedAt"]
        elif name == "execution update":
            node = f"n{index % NODE_COUNT}"
            status = ("running", "success")[index // NODE_COUNT % 2]
            fields = {f"nodes.{node}.status": status, f"nodes.{node}.finishedAt": _now()}
            after["nodes"][node]["status"] = fields[f"nodes.{node}.status"]
            after["nodes"][node]["finishedAt"] = fields[f"nodes.{node}.finishedAt"]
        else:
            raise ValueError(f"no update sequence for {name!r}")
        change = _envelope(rng, base["ns"]["coll"], "update", base["documentKey"]["_id"])
        change["updateDescription"] = {
            "updatedFields": fields,
            "removedFields": [],
            "truncatedArrays": [],
            "disambiguatedPaths": {},
        }
        change["fullDocumentBeforeChange"] = before
        changes.append(change)
        before = after
    return changes


def typical_events(seed: int = 7) -> dict[str, dict[str, Any]]:
    """The three typical events by name; a fresh deep copy each call."""
    rng = random.Random(seed)
    events = {
        "canvas update": canvas_update(rng),
        "execution update": execution_update(rng),
        "log chunk insert": log_chunk_insert(rng),
    }
    return copy.deepcopy(events)
