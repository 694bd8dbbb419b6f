"""Route MongoDB change events to flows and filter what each flow may see.

Pure standard-library code: no I/O, no logging, no third-party imports. Build a ``Pipeline`` from
``Route`` objects once, then call ``pipeline.process(event)`` for every change event.
"""

from .builtin import AllowStage, DropStage, PatchStage, PostImageStage, RouteStage, StripStage
from .errors import FilterError, InvalidPatchError, InvalidRouteError, PatchConflictError
from .patch import apply_patch, apply_update, diff, update_to_patch
from .paths import to_pointer, update_key_components
from .pipeline import ALL_COLLECTIONS, Pipeline
from .types import (
    ChangeEvent,
    Document,
    Drop,
    Filter,
    Operation,
    PatchOperation,
    PathComponent,
    Route,
    UpdateDescription,
)

__all__ = [
    "ALL_COLLECTIONS",
    "AllowStage",
    "ChangeEvent",
    "Document",
    "Drop",
    "DropStage",
    "Filter",
    "FilterError",
    "InvalidPatchError",
    "InvalidRouteError",
    "Operation",
    "PatchConflictError",
    "PatchOperation",
    "PatchStage",
    "PathComponent",
    "Pipeline",
    "PostImageStage",
    "Route",
    "RouteStage",
    "StripStage",
    "UpdateDescription",
    "apply_patch",
    "apply_update",
    "diff",
    "to_pointer",
    "update_key_components",
    "update_to_patch",
]
