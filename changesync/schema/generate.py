"""Generates ``events.json``, the JSON Schema (draft 2020-12) of every payload, from ``changesync.payloads``.

``python -m changesync.schema`` writes the file; ``--check`` exits 1 when it is out of date. msgspec
(a test/dev dependency) does the type-to-schema work; this module then names the shared types, closes
the objects, keeps declaration order and adds the attribute docstrings as descriptions. The service
never imports this module.
"""

from __future__ import annotations

import ast
import json
import sys
import typing
from pathlib import Path
from typing import Any

import msgspec

from changesync import payloads
from changesync.payloads import (
    CONTROL_PAYLOADS,
    DATA_PAYLOADS,
    ClusterTime,
    DocumentId,
    FlowDocument,
    PatchOperation,
    SnapshotCollection,
    SnapshotLog,
    SnapshotNodeLog,
)

from . import SCHEMA_PATH

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
PAYLOADS_SOURCE = Path(payloads.__file__)


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of every payload class of ``changesync.payloads``."""
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
    every = (
        *DATA_PAYLOADS,
        *CONTROL_PAYLOADS,
        ClusterTime,
        PatchOperation,
        SnapshotCollection,
        SnapshotLog,
        SnapshotNodeLog,
    )
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
    """``{class: {field: docstring}}``: the string literal after each annotated field of the payload classes,
    including the fields they inherit from classes defined earlier in ``changesync.payloads``."""
    tree = ast.parse(PAYLOADS_SOURCE.read_text(encoding="utf-8"))
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
    tree = ast.parse(PAYLOADS_SOURCE.read_text(encoding="utf-8"))
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
