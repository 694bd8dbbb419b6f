"""The MongoDB queries changesync sends: change stream pipelines, flow lookups, access checks.

Plain functions that build documents; ``changesync.mongo`` runs them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bson import ObjectId

from filters import Route

DATA_OPERATIONS = ("insert", "update", "replace", "delete")
"""Changes of one document: converted, filtered and published."""
RESET_OPERATIONS = ("drop", "rename", "dropDatabase", "invalidate")
"""Changes that end (part of) what clients have seen: their flows must reload."""


def server_denied_paths(routes: Sequence[Route]) -> list[str]:
    """Field paths removed by the server: plain deny patterns that every route shares."""
    if not routes:
        return []
    common = set(routes[0].deny)
    for route in routes[1:]:
        common &= set(route.deny)
    plain = sorted(p for p in common if "*" not in p and not any(part.isdigit() for part in p.split(".")))
    return [
        f"{prefix}.{path}"
        for path in plain
        for prefix in ("fullDocument", "fullDocumentBeforeChange", "updateDescription.updatedFields")
    ]


def watch_pipeline(routes: Sequence[Route]) -> list[dict[str, Any]]:
    """The live stream's pipeline: the routed collections' changes, and what resets them."""
    collections = [route.collection for route in routes]
    match = {
        "$match": {
            "$or": [
                {"ns.coll": {"$in": collections}, "operationType": {"$in": [*DATA_OPERATIONS, "drop", "rename"]}},
                {"to.coll": {"$in": collections}, "operationType": "rename"},
                {"operationType": {"$in": ["dropDatabase", "invalidate"]}},
            ]
        }
    }
    unset = server_denied_paths(routes)
    return [match, {"$unset": unset}] if unset else [match]


def flow_id_values(flow_id: str) -> list[Any]:
    """The stored forms a flow id from a URL may have: the string, an integer, an ObjectId."""
    values: list[Any] = [flow_id]
    if flow_id.lstrip("-").isdigit() and len(flow_id) < 20:
        values.append(int(flow_id))
    if ObjectId.is_valid(flow_id) and len(flow_id) == 24:
        values.append(ObjectId(flow_id))
    return values


def history_pipeline(routes: Sequence[Route], flow_id: str) -> list[dict[str, Any]]:
    """The live pipeline narrowed, on the server, to changes that can concern one flow."""
    values = {"$in": flow_id_values(flow_id)}
    branches: list[dict[str, Any]] = [{"operationType": {"$in": list(RESET_OPERATIONS)}}]
    for route in routes:
        path = route.flow_id_path
        places = (
            ["documentKey._id", "fullDocument._id"]
            if path == "_id"
            else [
                f"fullDocument.{path}",
                f"fullDocumentBeforeChange.{path}",
                f"updateDescription.updatedFields.{path}",
                f"documentKey.{path}",
            ]
        )
        branches.append({"ns.coll": route.collection, "$or": [{place: values} for place in places]})
    return [*watch_pipeline(routes), {"$match": {"$or": branches}}]


def flow_query(route: Route, flow_id: str) -> dict[str, Any]:
    """The route's documents of one flow."""
    return {route.flow_id_path: {"$in": flow_id_values(flow_id)}}


def access_query(template: str, flow_id: str, subject: str) -> dict[str, Any]:
    """The configured access query with ``"{flowId}"`` and ``"{sub}"`` filled in.

    ``"{flowId}"`` becomes ``{"$in": [...]}`` of the forms a flow id may be stored in.
    """
    flow_values = flow_id_values(flow_id)

    def fill(node: Any) -> Any:
        if node == "{flowId}":
            return {"$in": flow_values}
        if node == "{sub}":
            return subject
        if isinstance(node, dict):
            return {key: fill(value) for key, value in node.items()}
        if isinstance(node, list):
            return [fill(value) for value in node]
        return node

    filled: dict[str, Any] = fill(json.loads(template))
    return filled
