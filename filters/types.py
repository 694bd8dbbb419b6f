"""The values that flow through a filter pipeline.

Everything here is plain Python: documents are ``dict``/``list``/``str``/``int``/``float``/
``bool``/``None`` trees. The service converts BSON to these values before a pipeline sees them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

Operation: TypeAlias = Literal["insert", "update", "replace", "delete"]
Document: TypeAlias = dict[str, Any]
PathComponent: TypeAlias = str | int
"""A field name (``str``) or an array index (``int``)."""
PatchOperation: TypeAlias = dict[str, Any]
"""One RFC 6902 operation, e.g. ``{"op": "replace", "path": "/nodes/3/x", "value": 7}``."""


@dataclass(frozen=True, slots=True)
class UpdateDescription:
    """MongoDB's ``updateDescription`` of an update event, with plain values.

    ``updated_fields`` and ``removed_fields`` use MongoDB's dotted paths as reported by the server;
    ``disambiguated_paths`` maps the ambiguous ones to their components (field names as ``str``,
    array indices as ``int``).
    """

    updated_fields: Mapping[str, Any] = field(default_factory=dict)
    removed_fields: tuple[str, ...] = ()
    truncated_arrays: tuple[tuple[str, int], ...] = ()
    disambiguated_paths: Mapping[str, tuple[PathComponent, ...]] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not (self.updated_fields or self.removed_fields or self.truncated_arrays)


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One data change, as the pipeline sees it.

    The first group of fields comes from the change stream. The second group is filled in by the
    pipeline's stages: ``route`` sets ``event_type``, ``flow_id`` and ``origin`` (the writer's mutation
    id, see ``Route.origin_field``), ``patch`` sets ``patch``.
    Stages never mutate an event; they return a new one with ``dataclasses.replace``.
    """

    collection: str
    operation: Operation
    document_id: Any
    full_document: Document | None = None
    full_document_before_change: Document | None = None
    update_description: UpdateDescription | None = None
    cluster_time: tuple[int, int] | None = None
    wall_time: str | None = None
    document_key: Mapping[str, Any] = field(default_factory=dict)

    event_type: str | None = None
    flow_id: str | None = None
    patch: tuple[PatchOperation, ...] | None = None
    origin: str | None = None


@dataclass(frozen=True, slots=True)
class Drop:
    """A stage's verdict that an event must not be published.

    ``reason`` is a short stable token used in metrics and logs (for example ``"unroutable"``);
    ``detail`` is free text for an operator and never contains document values.
    """

    reason: str
    detail: str = ""


Filter: TypeAlias = Callable[[ChangeEvent], "ChangeEvent | Drop"]
"""A pipeline stage: returns the (possibly changed) event, or a ``Drop``."""


@dataclass(frozen=True, slots=True)
class Route:
    """How events of one collection are routed and filtered.

    - ``flow_id_path``: dotted path of the flow id in the document, or ``"_id"``.
    - ``drop_when``: predicates; a document matching any of them is private and never published.
      Each predicate maps a dotted path to a value (equality) or to one operator document
      (``{"$in": [...]}``, ``{"$ne": v}``, ``{"$exists": bool}``).
    - ``deny``: path patterns removed everywhere (``*`` matches one field name or array index;
      array indices are also matched implicitly, as in MongoDB queries).
    - ``allow``: when not ``None``, allow-list mode: only these path patterns (and ``_id``) pass.
    - ``deny_underscore``: remove every field whose name starts with ``_`` at any depth, except the
      top-level ``_id``.
    - ``origin_field``: dotted path of the mutation id a writer may stamp on its writes; read into
      ``ChangeEvent.origin`` and never published (it is denied like a ``deny`` path). ``None``: none.
    """

    collection: str
    event_type: str
    flow_id_path: str = "flowId"
    drop_when: tuple[Mapping[str, Any], ...] = ()
    deny: tuple[str, ...] = ()
    allow: tuple[str, ...] | None = None
    deny_underscore: bool = True
    origin_field: str | None = None
