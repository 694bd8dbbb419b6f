"""The SSE payload contract: one ``TypedDict`` per JSON object a client can receive.

This module is the single source of the wire format. ``changesync.events`` builds payloads typed
with these classes (so mypy checks the builders against them), and ``python -m changesync.schema``
writes the JSON Schema (draft 2020-12) that the TypeScript client's types are generated from:
``changesync/schema/events.json``, also served at ``GET /schema/events.json``.

The service only needs the standard library from here; the schema generator imports ``msgspec``
(a test/dev dependency) when it runs. Attribute docstrings below become ``description``s in the
schema, and from there JSDoc comments in the TypeScript types.
"""

from __future__ import annotations

import ast
import json
import sys
import typing
from pathlib import Path
from typing import Any, Literal, NotRequired, TypeAlias, TypedDict

SCHEMA_PATH = Path(__file__).parent / "schema" / "events.json"
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

FlowDocument: TypeAlias = dict[str, Any]
"""A filtered MongoDB document, with BSON values mapped to JSON (see the README's BSON → JSON table)."""
DocumentId: TypeAlias = str | float | bool | dict[str, Any]
"""A document's ``_id``, mapped like any other value (an ObjectId becomes a 24-character hex string)."""
ChangeOperation: TypeAlias = Literal["insert", "update", "replace", "delete"]


class ClusterTime(TypedDict):
    """The oplog time of a write; all writes of one transaction share it."""

    t: int
    """Seconds since the epoch."""
    i: int
    """Increment within the second."""


PatchOperation = TypedDict(
    "PatchOperation",
    {
        "op": Literal["add", "remove", "replace", "move", "copy", "test"],
        "path": str,
        "value": NotRequired[Any],
        "from": NotRequired[str],
    },
)
"""One RFC 6902 JSON Patch operation. changesync emits ``add``, ``remove`` and ``replace``."""


class _ChangeFields(TypedDict):
    type: str
    """The route's event type: ``SYNC_CANVAS``, ``EXECUTION_UPDATE`` or ``LOG_STREAM`` with the default routes."""
    flowId: str
    """The flow the change belongs to."""
    collection: str
    """The MongoDB collection."""
    clusterTime: ClusterTime | None
    """The oplog time of the write."""
    wallTime: str | None
    """ISO-8601 UTC time of the write."""


class ChangePayload(_ChangeFields):
    """A published change of one document."""

    operation: ChangeOperation
    documentId: DocumentId
    document: FlowDocument | None
    """The filtered document after the change; null for deletes, and for updates whose post-image is unknown."""
    patch: list[PatchOperation] | None
    """For updates: turns the previously published document into ``document``; null otherwise, or when the
    update cannot be expressed as a patch (then use ``document``, or refetch when that is null too)."""


class CoalescedPayload(_ChangeFields):
    """Several changes of one document, merged while a slow client's queue was shed: its latest state."""

    operation: Literal["replace", "delete"]
    """``replace`` with the latest document, or ``delete`` when the last change deleted it."""
    documentId: DocumentId
    document: FlowDocument | None
    """The latest filtered document; null after a delete."""
    patch: None
    coalesced: int
    """How many changes this event stands for."""


class SkippedPayload(_ChangeFields):
    """Stands for log chunks dropped while a slow client's queue was shed (routes with ``overflow = "collapse"``)."""

    operation: Literal["skipped"]
    documentId: None
    document: None
    patch: None
    skipped: int
    """How many events were dropped."""


class TooLargePayload(_ChangeFields):
    """A change too large to send (``limits.max_event_bytes``): refetch the document ``documentId``."""

    operation: ChangeOperation
    documentId: DocumentId
    document: None
    patch: None
    tooLarge: Literal[True]
    size: int
    """The size in bytes the event would have had."""


class SnapshotCollection(TypedDict):
    """What a snapshot holds of one collection."""

    eventType: str
    """The event type of the collection's route: later changes of these documents arrive as this event."""
    truncated: bool
    """True when the route's ``snapshot_limit`` was hit: the flow has more documents than ``documents``."""
    documents: list[FlowDocument]
    """The flow's filtered documents in this collection."""


class SnapshotPayload(TypedDict):
    """The flow's current filtered state, consistent with the events that follow it; replaces the client's copy."""

    type: Literal["SNAPSHOT"]
    flowId: str
    collections: dict[str, SnapshotCollection]
    """By collection name; collections whose route has ``snapshot = "none"`` (logs) are absent."""


class ResyncPayload(TypedDict):
    """The client's copy may have a gap."""

    type: Literal["RESYNC"]
    flowId: str
    reason: str
    """Why: ``slow-consumer``, ``shutdown``, ``token-expired`` (resumable); ``invalid-id``, ``unknown-position``,
    ``history-lost``, ``catch-up-failed``, ``catch-up-timeout``, ``access-revoked``, ``collection-drop``,
    ``collection-rename``, ``database-dropped``, ``invalidated``… (not resumable)."""
    resumable: bool
    """True: keep your state, the stream ends and reconnecting with the last event id catches up. False: discard
    your state; a ``SNAPSHOT`` follows when snapshots are on, otherwise reload the flow."""


DataPayload: TypeAlias = ChangePayload | CoalescedPayload | SkippedPayload | TooLargePayload
"""What a route's event (``SYNC_CANVAS``, ``EXECUTION_UPDATE``, ``LOG_STREAM``…) carries."""
Payload: TypeAlias = DataPayload | SnapshotPayload | ResyncPayload
"""Any ``data:`` object of the event stream."""

DATA_PAYLOADS: tuple[type[Any], ...] = (ChangePayload, CoalescedPayload, SkippedPayload, TooLargePayload)
CONTROL_PAYLOADS: tuple[type[Any], ...] = (SnapshotPayload, ResyncPayload)


# --- the JSON Schema ------------------------------------------------------------------------------


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of every payload, generated from the classes above with msgspec."""
    import msgspec  # a test/dev dependency: the service never runs this

    refs, definitions = msgspec.json.schema_components(
        [*DATA_PAYLOADS, *CONTROL_PAYLOADS], ref_template="#/$defs/{name}"
    )
    aliases = _alias_docstrings()
    # msgspec inlines type aliases; name the two that clients use everywhere, so that they become named types.
    document_id = msgspec.json.schema(DocumentId)
    definitions = _replace(definitions, document_id, {"$ref": "#/$defs/DocumentId"})
    definitions = _replace(definitions, msgspec.json.schema(FlowDocument), {"$ref": "#/$defs/FlowDocument"})
    descriptions = _attribute_docstrings()
    for name, definition in definitions.items():
        _tidy(definition, _classes().get(name), descriptions)
    definitions["FlowDocument"] = {
        "title": "FlowDocument",
        "description": aliases["FlowDocument"],
        "type": "object",
        "additionalProperties": True,
    }
    definitions["DocumentId"] = _replace(
        {"title": "DocumentId", "description": aliases["DocumentId"], **document_id},
        msgspec.json.schema(FlowDocument),
        {"$ref": "#/$defs/FlowDocument"},
    )
    data_refs, control_refs = refs[: len(DATA_PAYLOADS)], refs[len(DATA_PAYLOADS) :]
    definitions["DataPayload"] = {
        "title": "DataPayload",
        "description": aliases["DataPayload"],
        "oneOf": data_refs,
    }
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "Payload",
        "description": (
            "The data of one changesync Server-Sent Event. Generated from changesync/payloads.py by "
            "`python -m changesync.schema`; do not edit."
        ),
        "oneOf": [{"$ref": "#/$defs/DataPayload"}, *control_refs],
        "$defs": dict(sorted(definitions.items())),
    }


def render_schema() -> str:
    """The schema file's exact text."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def _classes() -> dict[str, type[Any]]:
    every = (*DATA_PAYLOADS, *CONTROL_PAYLOADS, ClusterTime, PatchOperation, SnapshotCollection)
    return {cls.__name__: cls for cls in every}


def _replace(node: Any, old: Any, new: Any) -> Any:
    """``node`` with every sub-schema equal to ``old`` replaced by ``new``."""
    if node == old:
        return new
    if isinstance(node, dict):
        return {key: _replace(value, old, new) for key, value in node.items()}
    if isinstance(node, list):
        return [_replace(value, old, new) for value in node]
    return node


def _tidy(definition: dict[str, Any], cls: type[Any] | None, descriptions: dict[str, dict[str, str]]) -> None:
    """Declaration order, closed objects, ``const`` for one-value enums, attribute docstrings as descriptions."""
    if cls is None or definition.get("type") != "object":
        return
    if "description" in definition:
        definition["description"] = _clean(definition["description"])
    order = list(typing.get_type_hints(cls))
    properties: dict[str, Any] = definition["properties"]
    definition["properties"] = {name: properties[name] for name in order}
    definition["required"] = [name for name in order if name in definition.get("required", ())]
    definition["additionalProperties"] = False
    own = descriptions.get(cls.__name__, {})
    for name, schema in definition["properties"].items():
        if isinstance(schema.get("enum"), list) and len(schema["enum"]) == 1:
            schema["const"] = schema.pop("enum")[0]
        # A $ref with a sibling description would become a new, numbered type in generated TypeScript.
        if name in own and "$ref" not in schema:
            schema["description"] = own[name]
    if cls is PatchOperation:
        definition["description"] = _alias_docstrings()["PatchOperation"]


def _clean(text: str) -> str:
    """One line, with Markdown code spans instead of reStructuredText literals."""
    return " ".join(text.split()).replace("``", "`")


def _attribute_docstrings() -> dict[str, dict[str, str]]:
    """``{class: {field: docstring}}``: the string literal after each annotated field of this module's classes,
    including the fields they inherit from classes defined earlier in the module."""
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    found: dict[str, dict[str, str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields: dict[str, str] = {}
        for base in node.bases:
            if isinstance(base, ast.Name):
                fields.update(found.get(base.id, {}))
        found[node.name] = fields
        for statement, following in zip(node.body, node.body[1:], strict=False):
            if (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                fields[statement.target.id] = _clean(following.value.value)
    return found


def _alias_docstrings() -> dict[str, str]:
    """The string literal after each module-level assignment (type aliases, the functional TypedDict)."""
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    found: dict[str, str] = {}
    for statement, following in zip(tree.body, tree.body[1:], strict=False):
        target = None
        if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            target = statement.target.id
        elif isinstance(statement, ast.Assign) and isinstance(statement.targets[0], ast.Name):
            target = statement.targets[0].id
        if (
            target is not None
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            found[target] = _clean(following.value.value)
    return found


def main(argv: list[str] | None = None) -> int:
    """``python -m changesync.schema [--check]``: write the schema file, or check that it is current."""
    args = sys.argv[1:] if argv is None else argv
    text = render_schema()
    if args == ["--check"]:
        current = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.exists() else ""
        if current != text:
            print(f"{SCHEMA_PATH} is out of date: run python -m changesync.schema", file=sys.stderr)
            return 1
        return 0
    if args:
        print("usage: python -m changesync.schema [--check]", file=sys.stderr)
        return 2
    SCHEMA_PATH.parent.mkdir(exist_ok=True)
    SCHEMA_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
    return 0
