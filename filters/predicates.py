"""``drop_when`` predicates: a small, MongoDB-flavoured subset of query matching.

A predicate maps dotted paths to conditions and holds when all of them hold:

- a plain value: equality. As in MongoDB, a path walks into arrays (``nodes.kind`` reaches the
  ``kind`` of every element of ``nodes``), an array value matches when any element is equal, and
  ``None`` also matches a missing path.
- ``{"$in": [v, ...]}``: equality with any of the values.
- ``{"$ne": v}``: the negation of equality.
- ``{"$exists": bool}``: whether the path reaches any value.

Equality is strict about booleans (``True`` is not ``1``) and lenient about numbers (``1 == 1.0``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from .paths import split_dotted

OPERATORS: Final = frozenset({"$in", "$ne", "$exists"})
"""The operators a predicate condition may use."""

_EQ: Final = "$eq"
_NUMBERS: Final = (int, float)
_SCALARS: Final = frozenset({str, int, float})


class Predicate:
    """One compiled ``drop_when`` entry; call ``matches(document)``."""

    __slots__ = ("_conditions",)

    def __init__(self, spec: Mapping[str, Any]) -> None:
        """Compile ``spec``; raise ``ValueError`` naming the bad part if it is not a valid predicate."""
        if not isinstance(spec, Mapping):
            raise ValueError("a predicate must be a mapping of dotted paths to conditions")
        if not spec:
            raise ValueError("an empty predicate would match every document")
        conditions: list[tuple[tuple[str, ...], str, Any]] = []
        for path, condition in spec.items():
            try:
                components = split_dotted(path)
            except ValueError as exc:
                raise ValueError(f"bad path {path!r}: {exc}") from None
            operator, operand = _parse_condition(path, condition)
            conditions.append((components, operator, operand))
        self._conditions = tuple(conditions)

    def matches(self, document: Mapping[str, Any]) -> bool:
        """Tell whether every condition holds for ``document``."""
        for components, operator, operand in self._conditions:
            values: list[Any] = []
            _collect(document, components, 0, values)
            if operator == _EQ:
                holds = _equal_match(values, operand)
            elif operator == "$ne":
                holds = not _equal_match(values, operand)
            elif operator == "$in":
                holds = any(_equal_match(values, candidate) for candidate in operand)
            else:
                holds = bool(values) is operand
            if not holds:
                return False
        return True


def _parse_condition(path: str, condition: Any) -> tuple[str, Any]:
    if not (isinstance(condition, Mapping) and any(isinstance(key, str) and key.startswith("$") for key in condition)):
        return _EQ, condition
    if len(condition) != 1:
        raise ValueError(f"the condition on {path!r} must hold exactly one operator")
    ((operator, operand),) = condition.items()
    if operator not in OPERATORS:
        raise ValueError(f"unsupported operator {operator!r} on {path!r}; use one of {sorted(OPERATORS)}")
    if operator == "$in":
        if isinstance(operand, (str, bytes, Mapping)) or not isinstance(operand, Sequence):
            raise ValueError(f"$in on {path!r} needs a list")
        return operator, tuple(operand)
    if operator == "$exists" and not isinstance(operand, bool):
        raise ValueError(f"$exists on {path!r} needs true or false")
    return operator, operand


def _collect(node: Any, components: tuple[str, ...], position: int, values: list[Any]) -> None:
    if position == len(components):
        values.append(node)
        return
    part = components[position]
    if type(node) is dict or isinstance(node, Mapping):
        if part in node:
            _collect(node[part], components, position + 1, values)
    elif type(node) is list:
        if part.isascii() and part.isdigit() and int(part) < len(node):
            _collect(node[int(part)], components, position + 1, values)
        for element in node:
            if isinstance(element, Mapping):
                _collect(element, components, position, values)


def _equal_match(values: list[Any], target: Any) -> bool:
    if target is None and not values:
        return True
    for value in values:
        if same_value(value, target):
            return True
        if type(value) is list and any(same_value(element, target) for element in value):
            return True
    return False


def same_value(left: Any, right: Any) -> bool:
    """JSON equality: like ``==`` but ``True`` differs from ``1`` (at any depth)."""
    if left is right:
        return True
    left_type, right_type = type(left), type(right)
    if left_type is right_type and left_type in _SCALARS:
        return bool(left == right)
    if left_type is bool or right_type is bool:
        return left_type is right_type and left == right
    if isinstance(left, _NUMBERS) and isinstance(right, _NUMBERS):
        return bool(left == right)
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(same_value(left[key], right[key]) for key in left)
    if isinstance(left, list | tuple) and isinstance(right, list | tuple):
        return len(left) == len(right) and all(map(same_value, left, right))
    return bool(left == right)


def first_match(predicates: Sequence[Predicate], document: Mapping[str, Any]) -> int:
    """Return the index of the first predicate that holds for ``document``, or -1."""
    for index, predicate in enumerate(predicates):
        if predicate.matches(document):
            return index
    return -1
