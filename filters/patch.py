"""JSON Patch (RFC 6902): structural diff, application, and MongoDB update descriptions.

- ``diff(before, after)`` builds the operations that turn one document into the other.
- ``apply_patch(document, operations)`` applies them without touching its inputs.
- ``apply_update(document, update)`` applies a MongoDB ``updateDescription`` the way the server does.
- ``update_to_patch(update)`` translates an ``updateDescription`` when no document is known.

Unchanged subtrees are skipped with ``==`` (C speed). Scalars compared directly, top-level members
included, must also have the same type, but inside a nested container that compares equal, values
Python finds equal (``1``, ``1.0``, ``True``) are not told apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import compress
from operator import is_, is_not
from typing import Any, Final

from .errors import InvalidPatchError, PatchConflictError
from .paths import escape_token, is_array_index, parse_pointer, to_pointer, update_key_components
from .predicates import same_value
from .types import PatchOperation, PathComponent, UpdateDescription

_MISSING: Final[Any] = object()
_APPEND: Final = "-"
"""The JSON Pointer token for "after the last element", valid only as an ``add`` target."""


def diff(before: Any, after: Any) -> list[PatchOperation]:
    """Return JSON Patch operations that turn ``before`` into ``after``.

    Objects are compared member by member. For arrays, equal runs at the start and at the end are
    skipped; in between, elements are compared index by index, then the surplus is added or removed
    (from the highest index down).
    """
    operations: list[PatchOperation] = []
    _diff(before, after, "", operations)
    return operations


def _diff(before: Any, after: Any, path: str, operations: list[PatchOperation]) -> None:
    # No ``==`` shortcut at the top: top-level members are then always compared with their types.
    if before is after:
        return
    kind = type(before)
    if kind is not type(after):
        operations.append({"op": "replace", "path": path, "value": after})
    elif kind is dict:
        _diff_dict(before, after, path, operations)
    elif kind is list:
        _diff_list(before, after, path, operations)
    elif before != after:
        operations.append({"op": "replace", "path": path, "value": after})


def _diff_member(old: Any, new: Any, path: str, operations: list[PatchOperation]) -> None:
    """Like ``_diff`` below the top, where equal containers are skipped with one C-level ``==``."""
    kind = type(old)
    if kind is not type(new):
        operations.append({"op": "replace", "path": path, "value": new})
    elif kind is dict:
        if old != new:
            _diff_dict(old, new, path, operations)
    elif kind is list:
        if old != new:
            _diff_list(old, new, path, operations)
    elif old != new:
        operations.append({"op": "replace", "path": path, "value": new})


def _diff_dict(before: dict[str, Any], after: dict[str, Any], path: str, operations: list[PatchOperation]) -> None:
    if len(before) == len(after) and all(map(is_, before, after)):
        # The same names in the same order (a copy with some members replaced): the members that
        # are not the very same objects are found in one C-level pass, in ``after``'s order.
        for name in compress(after, map(is_not, before.values(), after.values())):
            _diff_member(before[name], after[name], f"{path}/{escape_token(name)}", operations)
        return
    if before.keys() != after.keys():
        for name in before:
            if name not in after:
                operations.append({"op": "remove", "path": f"{path}/{escape_token(name)}"})
    for name, new in after.items():
        old = before.get(name, _MISSING)
        if old is new:
            continue
        if old is _MISSING:
            operations.append({"op": "add", "path": f"{path}/{escape_token(name)}", "value": new})
        else:
            _diff_member(old, new, f"{path}/{escape_token(name)}", operations)


def _diff_list(before: list[Any], after: list[Any], path: str, operations: list[PatchOperation]) -> None:
    # Equal runs at both ends are skipped, so removing or inserting one element of a long array is one
    # operation, not a replace of every element after it.
    start, end_before, end_after = 0, len(before), len(after)
    if end_before == end_after:
        # Nothing to add or remove: every element that is not the very same object is compared in
        # place (skipping equal runs at the ends would give the same operations).
        for index in compress(range(end_after), map(is_not, before, after)):
            _diff_member(before[index], after[index], f"{path}/{index}", operations)
        return
    while (
        start < end_before
        and start < end_after
        and (before[start] is after[start] or _same(before[start], after[start]))
    ):
        start += 1
    while (
        end_before > start
        and end_after > start
        and (before[end_before - 1] is after[end_after - 1] or _same(before[end_before - 1], after[end_after - 1]))
    ):
        end_before -= 1
        end_after -= 1
    common = min(end_before, end_after) - start
    for index in range(start, start + common):
        old, new = before[index], after[index]
        if old is not new:
            _diff_member(old, new, f"{path}/{index}", operations)
    for index in range(start + common, end_after):
        operations.append({"op": "add", "path": f"{path}/{index}", "value": after[index]})
    for index in range(end_before - 1, start + common - 1, -1):
        operations.append({"op": "remove", "path": f"{path}/{index}"})


def _same(old: Any, new: Any) -> bool:
    return old is new or (type(old) is type(new) and old == new)


def apply_patch(document: Any, operations: Iterable[Mapping[str, Any]]) -> Any:
    """Apply RFC 6902 operations (add, remove, replace, move, copy, test) and return the new document.

    Neither ``document`` nor the operations are changed; untouched subtrees are shared with the result.
    Raises ``InvalidPatchError`` for a malformed operation and ``PatchConflictError`` for a path that
    does not fit the document (or a failed ``test``).
    """
    for operation in operations:
        document = _apply_operation(document, operation)
    return document


def _apply_operation(document: Any, operation: Mapping[str, Any]) -> Any:
    if not isinstance(operation, Mapping):
        raise InvalidPatchError(operation, "an operation must be an object")
    op = operation.get("op")
    path = operation.get("path")
    if not isinstance(op, str) or not isinstance(path, str):
        raise InvalidPatchError(operation, "an operation needs string 'op' and 'path' members")
    tokens = _tokens(operation, path)
    if op in ("add", "replace", "test"):
        if "value" not in operation:
            raise InvalidPatchError(operation, f"{op!r} needs a 'value' member")
        value = operation["value"]
        if op == "test":
            if not same_value(_get(document, tokens, op, path), value):
                raise PatchConflictError(op, path, "the value differs")
            return document
        return _put(document, tokens, value, op, path)
    if op == "remove":
        return _remove(document, tokens, op, path)
    if op in ("move", "copy"):
        source = operation.get("from")
        if not isinstance(source, str):
            raise InvalidPatchError(operation, f"{op!r} needs a string 'from' member")
        source_tokens = _tokens(operation, source)
        value = _get(document, source_tokens, op, source)
        if op == "move":
            if tokens[: len(source_tokens)] == source_tokens and len(tokens) > len(source_tokens):
                raise PatchConflictError(op, path, "cannot move a value into itself")
            document = _remove(document, source_tokens, op, source)
        return _put(document, tokens, value, "add", path)
    raise InvalidPatchError(operation, f"unknown op {op!r}")


def _tokens(operation: Mapping[str, Any], pointer: str) -> list[str]:
    try:
        return parse_pointer(pointer)
    except ValueError as exc:
        raise InvalidPatchError(operation, str(exc)) from None


def _index(container: list[Any], token: str, op: str, path: str, *, allow_end: bool) -> int:
    if token == _APPEND and allow_end:
        return len(container)
    if not is_array_index(token):
        raise PatchConflictError(op, path, f"{token!r} is not an array index")
    index = int(token)
    if index > len(container) or (index == len(container) and not allow_end):
        raise PatchConflictError(op, path, f"index {index} is out of range")
    return index


def _get(document: Any, tokens: list[str], op: str, path: str) -> Any:
    node = document
    for token in tokens:
        if isinstance(node, dict):
            if token not in node:
                raise PatchConflictError(op, path, f"member {token!r} does not exist")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, op, path, allow_end=False)]
        else:
            raise PatchConflictError(op, path, "the parent is not a container")
    return node


def _rebuild(document: Any, tokens: list[str], op: str, path: str, value: Any) -> Any:
    """Copy the containers on the way to the parent of the last token; ``_change`` replaces the parent."""
    if len(tokens) == 1:
        return _change(document, tokens[0], op, path, value)
    head = tokens[0]
    if isinstance(document, dict):
        if head not in document:
            raise PatchConflictError(op, path, f"member {head!r} does not exist")
        copy: Any = dict(document)
        copy[head] = _rebuild(document[head], tokens[1:], op, path, value)
        return copy
    if isinstance(document, list):
        index = _index(document, head, op, path, allow_end=False)
        copy = list(document)
        copy[index] = _rebuild(document[index], tokens[1:], op, path, value)
        return copy
    raise PatchConflictError(op, path, "the parent is not a container")


def _change(parent: Any, token: str, op: str, path: str, value: Any) -> Any:
    if isinstance(parent, dict):
        if op != "add" and token not in parent:
            raise PatchConflictError(op, path, f"member {token!r} does not exist")
        if op == "remove":
            return {name: item for name, item in parent.items() if name != token}
        copy = dict(parent)
        copy[token] = value
        return copy
    if isinstance(parent, list):
        index = _index(parent, token, op, path, allow_end=op == "add")
        if op == "remove":
            return parent[:index] + parent[index + 1 :]
        items = list(parent)
        if op == "add":
            items.insert(index, value)
        else:
            items[index] = value
        return items
    raise PatchConflictError(op, path, "the parent is not a container")


def _put(document: Any, tokens: list[str], value: Any, op: str, path: str) -> Any:
    if not tokens:
        return value
    return _rebuild(document, tokens, op, path, value)


def _remove(document: Any, tokens: list[str], op: str, path: str) -> Any:
    if not tokens:
        raise PatchConflictError(op, path, "cannot remove the whole document")
    return _rebuild(document, tokens, "remove", path, None)


def apply_update(document: dict[str, Any], update: UpdateDescription) -> dict[str, Any]:
    """Return ``document`` with a MongoDB update description applied, as the server applies it.

    Truncations first, then updated fields (missing parents become sub-documents; an array index past
    the end pads with ``None``), then removed fields (an unset array element becomes ``None``).
    Numeric components address an array element or a field, whichever the container is.
    Raises ``PatchConflictError`` when a path runs through a scalar.
    """
    disambiguated = update.disambiguated_paths
    result: Any = document
    for field, size in update.truncated_arrays:
        result = _truncate(result, update_key_components(field, disambiguated), 0, max(size, 0))
    for key, value in update.updated_fields.items():
        result = _set(result, update_key_components(key, disambiguated), 0, value, key)
    for key in update.removed_fields:
        result = _unset(result, update_key_components(key, disambiguated), 0)
    return result  # type: ignore[no-any-return]


def _array_position(part: PathComponent) -> int | None:
    if type(part) is int:
        return part
    return int(part) if isinstance(part, str) and is_array_index(part) else None


def _set(node: Any, components: Sequence[PathComponent], depth: int, value: Any, key: str) -> Any:
    part = components[depth]
    last = depth == len(components) - 1
    if isinstance(node, dict):
        name = part if isinstance(part, str) else str(part)
        copy = dict(node)
        copy[name] = value if last else _set(node.get(name, {}), components, depth + 1, value, key)
        return copy
    if isinstance(node, list):
        index = _array_position(part)
        if index is None:
            raise PatchConflictError("set", key, f"{part!r} is not an array index")
        items = list(node)
        if index >= len(items):
            items.extend([None] * (index + 1 - len(items)))
            child: Any = {}
        else:
            child = items[index]
        items[index] = value if last else _set(child, components, depth + 1, value, key)
        return items
    raise PatchConflictError("set", key, "the path runs through a value that is not a container")


def _unset(node: Any, components: Sequence[PathComponent], depth: int) -> Any:
    part = components[depth]
    last = depth == len(components) - 1
    if isinstance(node, dict):
        name = part if isinstance(part, str) else str(part)
        if name not in node:
            return node
        if last:
            return {key: item for key, item in node.items() if key != name}
        copy = dict(node)
        copy[name] = _unset(node[name], components, depth + 1)
        return copy
    if isinstance(node, list):
        index = _array_position(part)
        if index is None or index >= len(node):
            return node
        items = list(node)
        items[index] = None if last else _unset(node[index], components, depth + 1)
        return items
    return node


def _truncate(node: Any, components: Sequence[PathComponent], depth: int, size: int) -> Any:
    if depth == len(components):
        return node[:size] if isinstance(node, list) else node
    part = components[depth]
    if isinstance(node, dict):
        name = part if isinstance(part, str) else str(part)
        if name not in node:
            return node
        copy = dict(node)
        copy[name] = _truncate(node[name], components, depth + 1, size)
        return copy
    if isinstance(node, list):
        index = _array_position(part)
        if index is None or index >= len(node):
            return node
        items = list(node)
        items[index] = _truncate(node[index], components, depth + 1, size)
        return items
    return node


def update_to_patch(update: UpdateDescription) -> tuple[PatchOperation, ...] | None:
    """Translate an update description into JSON Patch without knowing the document, when that is exact.

    Updated fields become ``add`` (which also replaces an existing member) and removed fields
    ``remove``. Returns ``None`` when the result cannot be known: a path that ends in an array index
    (an element set past the end pads the array) or any truncated array.
    """
    if update.truncated_arrays:
        return None
    disambiguated = update.disambiguated_paths
    operations: list[PatchOperation] = []
    for key, value in update.updated_fields.items():
        components = update_key_components(key, disambiguated)
        if type(components[-1]) is int:
            return None
        operations.append({"op": "add", "path": to_pointer(components), "value": value})
    for key in update.removed_fields:
        components = update_key_components(key, disambiguated)
        if type(components[-1]) is int:
            return None
        operations.append({"op": "remove", "path": to_pointer(components)})
    return tuple(operations)
