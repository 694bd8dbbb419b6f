"""Tests for ``filters.patch``: diff, apply_patch, apply_update and update_to_patch."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest

from filters import (
    InvalidPatchError,
    PatchConflictError,
    UpdateDescription,
    apply_patch,
    apply_update,
    diff,
    update_to_patch,
)


class TestDiff:
    @pytest.mark.parametrize(
        ("before", "after", "expected"),
        [
            ({"a": 1}, {"a": 1}, []),
            ({"a": 1}, {"a": 2}, [{"op": "replace", "path": "/a", "value": 2}]),
            ({"a": 1}, {}, [{"op": "remove", "path": "/a"}]),
            ({}, {"a": {"b": 1}}, [{"op": "add", "path": "/a", "value": {"b": 1}}]),
            ({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}, [{"op": "replace", "path": "/a/c", "value": 3}]),
            (
                {"a": [1, 2]},
                {"a": [1, 2, 3, 4]},
                [{"op": "add", "path": "/a/2", "value": 3}, {"op": "add", "path": "/a/3", "value": 4}],
            ),
            (
                {"a": [1, 2, 3, 4]},
                {"a": [1]},
                [{"op": "remove", "path": "/a/3"}, {"op": "remove", "path": "/a/2"}, {"op": "remove", "path": "/a/1"}],
            ),
            ({"a": [1, {"x": 1}]}, {"a": [1, {"x": 2}]}, [{"op": "replace", "path": "/a/1/x", "value": 2}]),
            ({"a": [[1], [2]]}, {"a": [[1], [2, 3]]}, [{"op": "add", "path": "/a/1/1", "value": 3}]),
            ({"a": {"b": 1}}, {"a": [1]}, [{"op": "replace", "path": "/a", "value": [1]}]),
            ({"a": 1}, {"a": True}, [{"op": "replace", "path": "/a", "value": True}]),
            ({"a": 0}, {"a": None}, [{"op": "replace", "path": "/a", "value": None}]),
            (
                {"a/b": 1, "m~n": 1},
                {"a/b": 2, "m~n": 2},
                [{"op": "replace", "path": "/a~1b", "value": 2}, {"op": "replace", "path": "/m~0n", "value": 2}],
            ),
            (
                {"a.b": 1, "$k": 1},
                {"a.b": 2},
                [{"op": "remove", "path": "/$k"}, {"op": "replace", "path": "/a.b", "value": 2}],
            ),
            ({"0": {"1": "x"}}, {"0": {"1": "y"}}, [{"op": "replace", "path": "/0/1", "value": "y"}]),
        ],
    )
    def test_operations(self, before: Any, after: Any, expected: list[dict[str, Any]]) -> None:
        """Objects diff member by member; arrays by common prefix, then appends or removals from the end."""
        assert diff(before, after) == expected

    @pytest.mark.parametrize(
        ("before", "after"),
        [
            ({"a": [1, 2, 3]}, {"a": [3, 2]}),
            ({"a": {"b": [1, {"c": None}]}, "d": "x"}, {"a": {"b": [{"c": None}]}, "e": []}),
            ({"k": [[], [[]]]}, {"k": [[[]], []]}),
        ],
    )
    def test_round_trips(self, before: Any, after: Any) -> None:
        """Applying the diff to ``before`` gives ``after``, with our applier and with ``jsonpatch``."""
        operations = diff(before, after)
        assert apply_patch(before, operations) == after
        assert jsonpatch.apply_patch(before, operations) == after

    def test_root_type_change(self) -> None:
        """Different root types need a whole-document replacement."""
        assert diff({"a": 1}, [1]) == [{"op": "replace", "path": "", "value": [1]}]


DOCUMENT: dict[str, Any] = {"a": {"b": [1, 2]}, "c": "x"}


class TestApplyPatch:
    @pytest.mark.parametrize(
        ("operation", "expected"),
        [
            ({"op": "add", "path": "/d", "value": 1}, {"a": {"b": [1, 2]}, "c": "x", "d": 1}),
            ({"op": "add", "path": "/c", "value": 1}, {"a": {"b": [1, 2]}, "c": 1}),
            ({"op": "add", "path": "/a/b/0", "value": 0}, {"a": {"b": [0, 1, 2]}, "c": "x"}),
            ({"op": "add", "path": "/a/b/-", "value": 3}, {"a": {"b": [1, 2, 3]}, "c": "x"}),
            ({"op": "add", "path": "/a/b/2", "value": 3}, {"a": {"b": [1, 2, 3]}, "c": "x"}),
            ({"op": "add", "path": "", "value": [1]}, [1]),
            ({"op": "remove", "path": "/a/b/0"}, {"a": {"b": [2]}, "c": "x"}),
            ({"op": "remove", "path": "/c"}, {"a": {"b": [1, 2]}}),
            ({"op": "replace", "path": "/a/b/1", "value": 9}, {"a": {"b": [1, 9]}, "c": "x"}),
            ({"op": "move", "from": "/c", "path": "/a/c"}, {"a": {"b": [1, 2], "c": "x"}}),
            ({"op": "copy", "from": "/a/b", "path": "/e"}, {"a": {"b": [1, 2]}, "c": "x", "e": [1, 2]}),
            ({"op": "test", "path": "/a/b", "value": [1, 2]}, {"a": {"b": [1, 2]}, "c": "x"}),
        ],
    )
    def test_operations(self, operation: dict[str, Any], expected: Any) -> None:
        """Each RFC 6902 operation gives the document the RFC describes."""
        assert apply_patch(DOCUMENT, [operation]) == expected

    def test_does_not_mutate_inputs(self) -> None:
        """The document and the operations are left as they were."""
        document = copy.deepcopy(DOCUMENT)
        operations: list[dict[str, Any]] = [
            {"op": "add", "path": "/a/b/-", "value": {"n": 1}},
            {"op": "replace", "path": "/a/b/2/n", "value": 2},
        ]
        frozen = copy.deepcopy(operations)
        result = apply_patch(document, operations)
        assert document == DOCUMENT and operations == frozen
        assert result["a"]["b"][2] == {"n": 2}

    @pytest.mark.parametrize(
        "operation",
        [
            {"op": "remove", "path": "/missing"},
            {"op": "replace", "path": "/missing", "value": 1},
            {"op": "add", "path": "/missing/x", "value": 1},
            {"op": "add", "path": "/a/b/3", "value": 1},
            {"op": "add", "path": "/a/b/01", "value": 1},
            {"op": "remove", "path": "/a/b/2"},
            {"op": "remove", "path": "/a/b/-"},
            {"op": "add", "path": "/c/x", "value": 1},
            {"op": "remove", "path": ""},
            {"op": "test", "path": "/c", "value": "y"},
            {"op": "test", "path": "/a/b/0", "value": True},
            {"op": "move", "from": "/a", "path": "/a/b/x"},
        ],
    )
    def test_conflicts(self, operation: dict[str, Any]) -> None:
        """A path that does not fit the document raises ``PatchConflictError``."""
        with pytest.raises(PatchConflictError):
            apply_patch(DOCUMENT, [operation])

    @pytest.mark.parametrize(
        "operation",
        [
            {"path": "/a"},
            {"op": "add", "path": "/a"},
            {"op": "jump", "path": "/a"},
            {"op": "move", "path": "/a"},
            {"op": "add", "path": "a", "value": 1},
            {"op": "add", "path": "/a~2", "value": 1},
            ["op", "add"],
        ],
    )
    def test_malformed(self, operation: Any) -> None:
        """A malformed operation raises ``InvalidPatchError``."""
        with pytest.raises(InvalidPatchError):
            apply_patch(DOCUMENT, [operation])


def update(
    updated: dict[str, Any] | None = None,
    removed: tuple[str, ...] = (),
    truncated: tuple[tuple[str, int], ...] = (),
    disambiguated: dict[str, Any] | None = None,
) -> UpdateDescription:
    return UpdateDescription(updated or {}, removed, truncated, disambiguated or {})


class TestApplyUpdate:
    @pytest.mark.parametrize(
        ("document", "given", "expected"),
        [
            ({"a": 1}, update({"a": 2, "b": 3}), {"a": 2, "b": 3}),
            ({"a": {"b": 1}}, update({"a.c": 2}), {"a": {"b": 1, "c": 2}}),
            ({}, update({"a.b.c": 1}), {"a": {"b": {"c": 1}}}),
            ({"n": [1, 2]}, update({"n.2": 3}), {"n": [1, 2, 3]}),
            ({"n": [1]}, update({"n.3": 4}), {"n": [1, None, None, 4]}),
            ({"n": [1]}, update({"n.2.x": 4}), {"n": [1, None, {"x": 4}]}),
            ({"n": [{"x": 1}]}, update({"n.0.x": 2}), {"n": [{"x": 2}]}),
            ({"o": {"0": "a"}}, update({"o.0": "b"}), {"o": {"0": "b"}}),
            ({"a": [[1, 2]]}, update({"a.0.1": 3}), {"a": [[1, 3]]}),
            ({"a": [{"1": 0}]}, update({"a.0.1": 3}, disambiguated={"a.0.1": ["a", 0, "1"]}), {"a": [{"1": 3}]}),
            ({"x.y": 1}, update({"x.y": 2}, disambiguated={"x.y": ["x.y"]}), {"x.y": 2}),
            ({"a": 1, "b": {"c": 2, "d": 3}}, update(removed=("a", "b.c", "zz", "b.q.r")), {"b": {"d": 3}}),
            ({"n": [1, 2]}, update(removed=("n.1",)), {"n": [1, None]}),
            (
                {"n": [1, 2, 3], "m": [{"k": [1, 2]}]},
                update(truncated=(("n", 1), ("m.0.k", 0))),
                {"n": [1], "m": [{"k": []}]},
            ),
            ({"n": [1, {"b": 1}, 3]}, update({"n.1.b": 2}, truncated=(("n", 2),)), {"n": [1, {"b": 2}]}),
        ],
    )
    def test_mongodb_semantics(self, document: dict[str, Any], given: UpdateDescription, expected: Any) -> None:
        """Updated fields set values (creating parents, padding arrays), removed fields unset, truncations cut."""
        frozen = copy.deepcopy(document)
        assert apply_update(document, given) == expected
        assert document == frozen

    @pytest.mark.parametrize(
        ("document", "given"),
        [({"a": 1}, update({"a.b": 2})), ({"n": [1]}, update({"n.x": 2})), ({"a": None}, update({"a.b": 1}))],
    )
    def test_conflicts(self, document: dict[str, Any], given: UpdateDescription) -> None:
        """A path through a scalar cannot be set, as on the server."""
        with pytest.raises(PatchConflictError):
            apply_update(document, given)


class TestUpdateToPatch:
    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            (update({"title": "T"}), ({"op": "add", "path": "/title", "value": "T"},)),
            (update({"nodes.3.position.x": 5}), ({"op": "add", "path": "/nodes/3/position/x", "value": 5},)),
            (update(removed=("a.b",)), ({"op": "remove", "path": "/a/b"},)),
            (
                update({"a/b": 1, "m~n.$k": 2}),
                ({"op": "add", "path": "/a~1b", "value": 1}, {"op": "add", "path": "/m~0n/$k", "value": 2}),
            ),
            (
                update({"a.0.1": 1}, disambiguated={"a.0.1": ["a", 0, "1"]}),
                ({"op": "add", "path": "/a/0/1", "value": 1},),
            ),
            (update({"x.y": 1}, disambiguated={"x.y": ["x.y"]}), ({"op": "add", "path": "/x.y", "value": 1},)),
            (update({"nodes": []}), ({"op": "add", "path": "/nodes", "value": []},)),
            (update(), ()),
        ],
    )
    def test_translates(self, given: UpdateDescription, expected: tuple[dict[str, Any], ...]) -> None:
        """Member paths become ``add`` (which also replaces) and removed fields ``remove``."""
        assert update_to_patch(given) == expected

    @pytest.mark.parametrize(
        "given",
        [
            update({"nodes.3": {"id": 1}}),
            update({"a.0.1": 1}),
            update({"a": 1}, truncated=(("n", 1),)),
            update(removed=("n.2",)),
        ],
    )
    def test_unknowable(self, given: UpdateDescription) -> None:
        """A path ending in an array index, or any truncation, cannot be translated without the document."""
        assert update_to_patch(given) is None
