"""Exceptions raised by the ``filters`` package.

Hierarchy::

    FilterError(Exception)
    ├── InvalidRouteError(FilterError, ValueError)   a route, pattern, predicate or stage is unusable
    ├── InvalidPatchError(FilterError, ValueError)   a JSON Patch operation is malformed
    └── PatchConflictError(FilterError, ValueError)  a JSON Patch path does not fit the document

Configuration errors are raised when a ``Pipeline`` is built, never while it processes events.
"""

from __future__ import annotations

from typing import Any


class FilterError(Exception):
    """Base class of every error raised by ``filters``."""


class InvalidRouteError(FilterError, ValueError):
    """A route, or something attached to it, cannot be used.

    ``collection`` names the route (``None`` when the problem is not tied to one route) and ``value``
    is the offending configuration value.
    """

    def __init__(self, collection: str | None, value: Any, reason: str) -> None:
        self.collection = collection
        self.value = value
        self.reason = reason
        where = f"route {collection!r}: " if collection is not None else ""
        super().__init__(f"{where}{reason}, got {value!r}")


class InvalidPatchError(FilterError, ValueError):
    """A JSON Patch operation is malformed (unknown ``op``, missing ``path`` or ``value``)."""

    def __init__(self, operation: Any, reason: str) -> None:
        self.operation = operation
        self.reason = reason
        super().__init__(f"{reason}: {operation!r}")


class PatchConflictError(FilterError, ValueError):
    """A JSON Patch operation's path does not exist, or has the wrong kind of parent, in the document."""

    def __init__(self, op: str, path: str, reason: str) -> None:
        self.op = op
        self.path = path
        self.reason = reason
        super().__init__(f"cannot {op} {path!r}: {reason}")
