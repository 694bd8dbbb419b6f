"""Tests for ``filters.paths``: dotted paths, update keys and JSON Pointers."""

from __future__ import annotations

from typing import Any

import pytest

from filters.paths import (
    escape_token,
    is_array_index,
    parse_pointer,
    split_dotted,
    split_pattern,
    to_pointer,
    unescape_token,
    update_key_components,
)


class TestSplitDotted:
    @pytest.mark.parametrize(
        ("path", "expected"),
        [("flowId", ("flowId",)), ("meta.flowId", ("meta", "flowId")), ("a.$k.0", ("a", "$k", "0"))],
    )
    def test_splits_on_dots(self, path: str, expected: tuple[str, ...]) -> None:
        """A dotted path becomes its field names."""
        assert split_dotted(path) == expected

    @pytest.mark.parametrize("path", ["", ".", "a.", ".a", "a..b"])
    def test_rejects_empty_components(self, path: str) -> None:
        """Empty paths and empty components are configuration mistakes."""
        with pytest.raises(ValueError, match="empty"):
            split_dotted(path)

    def test_rejects_non_strings(self) -> None:
        """A path must be a string."""
        with pytest.raises(ValueError, match="string"):
            split_dotted(3)  # type: ignore[arg-type]


class TestSplitPattern:
    @pytest.mark.parametrize("pattern", ["nodes.*.data", "*", "a.*.*"])
    def test_accepts_whole_wildcards(self, pattern: str) -> None:
        """``*`` is allowed as a whole component."""
        assert split_pattern(pattern) == tuple(pattern.split("."))

    @pytest.mark.parametrize("pattern", ["nodes.n*", "a.**", "*x"])
    def test_rejects_partial_wildcards(self, pattern: str) -> None:
        """Globs inside a component are not supported and say so."""
        with pytest.raises(ValueError, match="whole path component"):
            split_pattern(pattern)


class TestIsArrayIndex:
    @pytest.mark.parametrize(
        ("part", "expected"),
        [("0", True), ("12", True), ("01", False), ("", False), ("-1", False), ("1a", False), ("\u0661", False)],
    )
    def test_mongodb_index_rules(self, part: str, expected: bool) -> None:
        """Digits without a leading zero are indices; anything else is a field name."""
        assert is_array_index(part) is expected


class TestUpdateKeyComponents:
    @pytest.mark.parametrize(
        ("key", "expected"),
        [
            ("title", ("title",)),
            ("nodes.3.position.x", ("nodes", 3, "position", "x")),
            ("nodes.3", ("nodes", 3)),
            ("0.1", ("0", 1)),
            ("a.01", ("a", "01")),
            ("a.$k", ("a", "$k")),
        ],
    )
    def test_splits_numeric_components_as_indices(self, key: str, expected: tuple[Any, ...]) -> None:
        """Without disambiguation, numeric components after the first are array indices."""
        assert update_key_components(key, {}) == expected

    @pytest.mark.parametrize(
        ("key", "disambiguated", "expected"),
        [
            ("a.0.1", {"a.0.1": ["a", 0, "1"]}, ("a", 0, "1")),
            ("new.Field.", {"new.Field.": ["new.Field."]}, ("new.Field.",)),
            ("a.b.c", {"a.b.c": ("a.b", "c")}, ("a.b", "c")),
        ],
    )
    def test_uses_disambiguated_paths(self, key: str, disambiguated: dict[str, Any], expected: tuple[Any, ...]) -> None:
        """``disambiguatedPaths`` gives the exact components of an ambiguous key."""
        assert update_key_components(key, disambiguated) == expected

    @pytest.mark.parametrize("given", [[], "a.b", [0, "b"], ["a", -1], ["a", 1.5], ["a", True], None])
    def test_ignores_malformed_disambiguation(self, given: Any) -> None:
        """A malformed entry falls back to splitting the key."""
        assert update_key_components("a.b", {"a.b": given}) == ("a", "b")


class TestPointer:
    @pytest.mark.parametrize(
        ("components", "expected"),
        [
            ((), ""),
            (("a",), "/a"),
            (("nodes", 3, "x"), "/nodes/3/x"),
            (("a/b", "m~n"), "/a~1b/m~0n"),
            (("~1",), "/~01"),
            (("a.b", "$k", ""), "/a.b/$k/"),
        ],
    )
    def test_formats_and_parses(self, components: tuple[Any, ...], expected: str) -> None:
        """Components become a pointer with RFC 6901 escaping, and parse back to strings."""
        assert to_pointer(components) == expected
        assert parse_pointer(expected) == [str(part) for part in components]

    @pytest.mark.parametrize("token", ["plain", "a/b", "a~b", "~1", "/~/"])
    def test_escape_round_trip(self, token: str) -> None:
        """Unescaping an escaped token gives it back."""
        assert unescape_token(escape_token(token)) == token

    @pytest.mark.parametrize("pointer", ["a", "/a~", "/a~2"])
    def test_rejects_malformed_pointers(self, pointer: str) -> None:
        """A pointer must start with ``/`` and use only ``~0`` and ``~1`` escapes."""
        with pytest.raises(ValueError):
            parse_pointer(pointer)
