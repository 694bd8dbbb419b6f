"""Tests for ``filters.predicates``: ``drop_when`` matching."""

from __future__ import annotations

from typing import Any

import pytest

from filters.predicates import Predicate, first_match, same_value

DOCUMENT: dict[str, Any] = {
    "visibility": "private",
    "count": 3,
    "flag": True,
    "owner": {"id": "u1", "team": None},
    "tags": ["a", "b"],
    "nodes": [{"kind": "secret", "n": 1}, {"kind": "plain", "sub": [{"deep": 1}]}],
    "matrix": [[1, 2], [3]],
    "a.b": "dotted",
}


class TestPredicate:
    @pytest.mark.parametrize(
        ("spec", "expected"),
        [
            ({"visibility": "private"}, True),
            ({"visibility": "public"}, False),
            ({"owner.id": "u1"}, True),
            ({"owner": {"id": "u1", "team": None}}, True),
            ({"owner": {"team": None, "id": "u1"}}, True),
            ({"tags": "a"}, True),
            ({"tags": ["a", "b"]}, True),
            ({"tags": ["b", "a"]}, False),
            ({"nodes.kind": "secret"}, True),
            ({"nodes.sub.deep": 1}, True),
            ({"nodes.0.kind": "secret"}, True),
            ({"nodes.1.kind": "secret"}, False),
            ({"matrix": [3]}, True),
            ({"missing": None}, True),
            ({"owner.team": None}, True),
            ({"count": 3.0}, True),
            ({"count": True}, False),
            ({"flag": 1}, False),
            ({"flag": True}, True),
        ],
    )
    def test_equality(self, spec: dict[str, Any], expected: bool) -> None:
        """Equality walks arrays like MongoDB, matches elements of array values, and tells booleans from numbers."""
        assert Predicate(spec).matches(DOCUMENT) is expected

    @pytest.mark.parametrize(
        ("spec", "expected"),
        [
            ({"visibility": {"$in": ["private", "secret"]}}, True),
            ({"visibility": {"$in": []}}, False),
            ({"nodes.kind": {"$in": ["secret"]}}, True),
            ({"tags": {"$in": ["z", "b"]}}, True),
            ({"missing": {"$in": [None]}}, True),
            ({"visibility": {"$ne": "public"}}, True),
            ({"visibility": {"$ne": "private"}}, False),
            ({"missing": {"$ne": 1}}, True),
            ({"tags": {"$ne": "a"}}, False),
            ({"owner.team": {"$exists": True}}, True),
            ({"owner.nope": {"$exists": True}}, False),
            ({"owner.nope": {"$exists": False}}, True),
            ({"nodes.sub": {"$exists": True}}, True),
            ({"a.b": {"$exists": True}}, False),
        ],
    )
    def test_operators(self, spec: dict[str, Any], expected: bool) -> None:
        """``$in``, ``$ne`` and ``$exists`` behave as their MongoDB namesakes."""
        assert Predicate(spec).matches(DOCUMENT) is expected

    @pytest.mark.parametrize(
        ("spec", "expected"),
        [
            ({"visibility": "private", "count": 3}, True),
            ({"visibility": "private", "count": 4}, False),
            ({"visibility": {"$ne": "x"}, "owner.id": {"$in": ["u1"]}, "tags": {"$exists": True}}, True),
        ],
    )
    def test_all_conditions_must_hold(self, spec: dict[str, Any], expected: bool) -> None:
        """The conditions of one predicate are combined with AND."""
        assert Predicate(spec).matches(DOCUMENT) is expected

    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            ({}, "empty predicate"),
            ([("a", 1)], "mapping"),
            ({"a": {"$gt": 1}}, "unsupported operator"),
            ({"a": {"$in": [1], "$ne": 2}}, "exactly one operator"),
            ({"a": {"$in": [1], "b": 2}}, "exactly one operator"),
            ({"a": {"$in": "ab"}}, "needs a list"),
            ({"a": {"$in": {"x": 1}}}, "needs a list"),
            ({"a": {"$exists": 1}}, "true or false"),
            ({"a..b": 1}, "bad path"),
            ({"": 1}, "bad path"),
        ],
    )
    def test_rejects_bad_predicates(self, spec: Any, message: str) -> None:
        """Invalid predicates fail at construction with a message naming the problem."""
        with pytest.raises(ValueError, match=message):
            Predicate(spec)

    def test_document_equality_without_operators(self) -> None:
        """A mapping value without ``$`` keys is an equality on an embedded document."""
        assert Predicate({"owner": {"id": "u1", "team": None}}).matches(DOCUMENT)


class TestFirstMatch:
    @pytest.mark.parametrize(
        ("specs", "expected"),
        [
            ([{"visibility": "public"}, {"count": 3}], 1),
            ([{"visibility": "private"}, {"count": 3}], 0),
            ([{"visibility": "public"}], -1),
            ([], -1),
        ],
    )
    def test_returns_index_of_first_match(self, specs: list[dict[str, Any]], expected: int) -> None:
        """Any matching predicate counts (OR); the first one's index is reported."""
        assert first_match([Predicate(spec) for spec in specs], DOCUMENT) == expected


class TestSameValue:
    @pytest.mark.parametrize(
        ("left", "right", "expected"),
        [
            (1, 1.0, True),
            (1, True, False),
            (0, False, False),
            ([1, {"a": True}], [1, {"a": True}], True),
            ([1, {"a": True}], [1, {"a": 1}], False),
            ({"a": 1}, {"a": 1, "b": 2}, False),
            ("a", "a", True),
            (None, None, True),
            ((1, 2), [1, 2], True),
        ],
    )
    def test_json_equality(self, left: Any, right: Any, expected: bool) -> None:
        """Booleans never equal numbers, at any depth; ints equal floats of the same value."""
        assert same_value(left, right) is expected
