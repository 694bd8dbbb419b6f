"""Dotted paths, update-description keys and JSON Pointers.

A path is a tuple of components: ``str`` for a field name, ``int`` for an array index.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from .types import PathComponent

WILDCARD: Final = "*"
"""The pattern component that matches exactly one field name or array index."""


def split_dotted(path: str) -> tuple[str, ...]:
    """Split a configured dotted path into field names; raise ``ValueError`` on an empty component."""
    if not isinstance(path, str):
        raise ValueError("a path must be a string")
    parts = tuple(path.split("."))
    if "" in parts:
        raise ValueError("a path must not be empty or contain empty components")
    return parts


def split_pattern(pattern: str) -> tuple[str, ...]:
    """Split a deny/allow pattern; ``*`` must be a whole component."""
    parts = split_dotted(pattern)
    for part in parts:
        if WILDCARD in part and part != WILDCARD:
            raise ValueError(f"'*' must be a whole path component, not part of {part!r}")
    return parts


def is_array_index(part: str) -> bool:
    """Tell whether a dotted-path component reads as an array index (MongoDB: digits, no leading zero)."""
    return part.isascii() and part.isdigit() and (part == "0" or part[0] != "0")


def update_key_components(key: str, disambiguated: Mapping[str, Any]) -> tuple[PathComponent, ...]:
    """Return the components of an ``updatedFields``/``removedFields`` key.

    ``disambiguatedPaths`` wins when it has a well-formed entry for the key. Otherwise the key is split
    on dots and numeric components after the first are taken as array indices.
    """
    if disambiguated:
        given = disambiguated.get(key)
        if isinstance(given, Sequence) and not isinstance(given, str) and given:
            components = tuple(given)
            if isinstance(components[0], str) and all(
                isinstance(part, str) or (type(part) is int and part >= 0) for part in components
            ):
                return components
    if "." not in key:
        return (key,)
    return _split_update_key(key)


@functools.lru_cache(maxsize=4096)
def _split_update_key(key: str) -> tuple[PathComponent, ...]:
    # Remembered: the same fields are updated again and again (a dragged node's position).
    head, *rest = key.split(".")
    return (head, *(int(part) if is_array_index(part) else part for part in rest))


def escape_token(token: str) -> str:
    """Escape one JSON Pointer reference token (RFC 6901)."""
    if "~" in token:
        token = token.replace("~", "~0")
    if "/" in token:
        token = token.replace("/", "~1")
    return token


def unescape_token(token: str) -> str:
    """Undo ``escape_token``."""
    if "~" not in token:
        return token
    return token.replace("~1", "/").replace("~0", "~")


def to_pointer(components: Iterable[PathComponent]) -> str:
    """Format path components as a JSON Pointer; indices are written in decimal."""
    return "".join("/" + (escape_token(part) if isinstance(part, str) else str(part)) for part in components)


def parse_pointer(pointer: str) -> list[str]:
    """Split a JSON Pointer into unescaped reference tokens; raise ``ValueError`` if malformed."""
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise ValueError("a JSON Pointer must be empty or start with '/'")
    tokens = pointer[1:].split("/")
    for token in tokens:
        if "~" in token and any(tail[:1] not in ("0", "1") for tail in token.split("~")[1:]):
            raise ValueError("'~' must be followed by '0' or '1' in a JSON Pointer")
    return [unescape_token(token) for token in tokens]
