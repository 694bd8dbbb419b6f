"""Tests for ``filters.visibility``: the compiled deny/allow rules and the projections built on them."""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import pytest

from filters import UpdateDescription, visibility
from filters.paths import split_pattern
from filters.visibility import (
    State,
    Visibility,
    is_visible_as_is,
    project_document,
    project_documents,
    project_update,
)


def rules(deny: tuple[str, ...] = (), allow: tuple[str, ...] | None = None, *, underscore: bool = False) -> State:
    split_allow = [split_pattern(pattern) for pattern in allow] if allow is not None else None
    return Visibility([split_pattern(pattern) for pattern in deny], split_allow, deny_underscore=underscore).root


CANVAS: dict[str, Any] = {
    "_id": "b1",
    "flowId": "f1",
    "__v": 4,
    "nodes": [
        {"id": "n0", "_tmp": 1, "data": {"label": "A", "credentials": {"apiKey": "sk-0"}}},
        {"id": "n1", "data": {"label": "B", "credentials": {"apiKey": "sk-1"}, "_cache": [1]}},
    ],
}


class TestDenyProjection:
    @pytest.mark.parametrize(
        ("deny", "document", "expected"),
        [
            (("secret",), {"a": 1, "secret": 2}, {"a": 1}),
            (("a.b",), {"a": {"b": 1, "c": 2}}, {"a": {"c": 2}}),
            (("a.*",), {"a": {"b": 1, "c": 2}, "d": 3}, {"a": {}, "d": 3}),
            (("*.secret",), {"a": {"secret": 1}, "b": {"secret": 2, "x": 3}}, {"a": {}, "b": {"x": 3}}),
            (("a.b",), {"a": [{"b": 1, "c": 2}, {"b": 3}]}, {"a": [{"c": 2}, {}]}),
            (("a.b",), {"a": [[{"b": 1, "c": 2}]]}, {"a": [[{"c": 2}]]}),
            (("a.1",), {"a": ["x", "y", "z"]}, {"a": ["x", None, "z"]}),
            (("a.1",), {"a": {"1": "x", "2": "y"}}, {"a": {"2": "y"}}),
            (("a.*",), {"a": ["x", {"k": 1}]}, {"a": [None, None]}),
            (("a.b",), {"a.b": 1, "a": {"b": 2}}, {"a": {}}),
            (("$k",), {"$k": 1, "k": 2}, {"k": 2}),
            (("a/b.m~n",), {"a/b": {"m~n": 1, "o": 2}}, {"a/b": {"o": 2}}),
            (("a.b",), {"a": 5}, {"a": 5}),
        ],
    )
    def test_removes_denied_paths(self, deny: tuple[str, ...], document: dict[str, Any], expected: Any) -> None:
        """Denied members disappear with everything under them; denied array elements become ``None``."""
        assert project_document(document, rules(deny)) == expected

    def test_canvas_credentials(self) -> None:
        """``nodes.*.data.credentials`` removes every node's credentials and nothing else."""
        shown = project_document(CANVAS, rules(("nodes.*.data.credentials",)))
        assert [node["data"] for node in shown["nodes"]] == [{"label": "A"}, {"label": "B", "_cache": [1]}]
        assert shown["__v"] == 4

    def test_index_transparency(self) -> None:
        """A named pattern component skips array indices, so ``nodes.data.credentials`` also matches."""
        shown = project_document(CANVAS, rules(("nodes.data.credentials",)))
        assert all("credentials" not in node["data"] for node in shown["nodes"])

    def test_keeps_key_order_and_input(self) -> None:
        """The projection keeps dict order and never changes its input."""
        document = {"z": 1, "secret": 2, "a": {"y": 1, "secret": 2, "b": 3}, "m": 4}
        before = copy.deepcopy(document)
        shown = project_document(document, rules(("secret", "a.secret")))
        assert list(shown) == ["z", "a", "m"] and list(shown["a"]) == ["y", "b"]
        assert document == before

    def test_returns_input_when_nothing_is_removed(self) -> None:
        """Unchanged containers are returned as they are, not copied."""
        document = {"a": {"b": [1, {"c": 2}]}}
        shown = project_document(document, rules(("secret",), underscore=True))
        assert shown is document

    def test_mapping_subclasses_are_not_passed_through(self) -> None:
        """A mapping that is not a plain dict is projected too, never shown whole."""
        document = {"a": OrderedDict(secret=1, ok=2), "t": ({"secret": 3},)}
        assert project_document(document, rules(("a.secret", "t.secret"))) == {"a": {"ok": 2}, "t": [{}]}


class TestUnderscoreProjection:
    @pytest.mark.parametrize(
        ("document", "expected"),
        [
            ({"_id": 1, "__v": 0, "a": 1}, {"_id": 1, "a": 1}),
            ({"_id": {"_x": 1, "y": 2}}, {"_id": {"y": 2}}),
            ({"a": {"_id": 1, "b": [{"_c": 1, "d": 2}]}}, {"a": {"b": [{"d": 2}]}}),
            ({"a": ["_x", {"x_": 1}]}, {"a": ["_x", {"x_": 1}]}),
            ({"a": [[{"__proto": 1}]]}, {"a": [[{}]]}),
        ],
    )
    def test_removes_underscore_names_at_any_depth(self, document: dict[str, Any], expected: Any) -> None:
        """Names starting with ``_`` go at every depth, except the top-level ``_id``; values are untouched."""
        assert project_document(document, rules(underscore=True)) == expected

    def test_combines_with_deny(self) -> None:
        """Deny patterns and underscore names are both removed in one pass."""
        shown = project_document(CANVAS, rules(("nodes.*.data.credentials",), underscore=True))
        assert shown == {
            "_id": "b1",
            "flowId": "f1",
            "nodes": [{"id": "n0", "data": {"label": "A"}}, {"id": "n1", "data": {"label": "B"}}],
        }

    def test_explicit_deny_of_id_wins(self) -> None:
        """The ``_id`` exception covers ``deny_underscore`` only, not an explicit deny pattern."""
        assert project_document({"_id": 1, "a": 2}, rules(("_id",), underscore=True)) == {"a": 2}


class TestAllowProjection:
    @pytest.mark.parametrize(
        ("allow", "document", "expected"),
        [
            (("title",), {"_id": 1, "title": "T", "body": "B"}, {"_id": 1, "title": "T"}),
            (("a.b",), {"a": {"b": {"deep": 1}, "c": 2}, "d": 3}, {"a": {"b": {"deep": 1}}}),
            (("a.b",), {"a": 5}, {}),
            (("a.b",), {"a": {"c": 1}}, {"a": {}}),
            (("nodes.id",), {"nodes": [{"id": 1, "x": 2}, 7, [{"id": 3}]]}, {"nodes": [{"id": 1}, None, [{"id": 3}]]}),
            (("nodes.*.id",), {"nodes": [{"id": 1, "x": 2}]}, {"nodes": [{"id": 1}]}),
            (("*",), {"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 2}}),
            ((), {"_id": 1, "a": 2}, {"_id": 1}),
        ],
    )
    def test_keeps_allowed_paths_and_their_ancestors(
        self, allow: tuple[str, ...], document: dict[str, Any], expected: Any
    ) -> None:
        """Allowed paths pass with their descendants; ancestors stay as containers with only allowed content."""
        assert project_document(document, rules(allow=allow)) == expected

    def test_deny_and_underscore_win(self) -> None:
        """In allow-list mode ``deny`` and ``deny_underscore`` still remove paths."""
        document = {"_id": 1, "nodes": [{"id": 1, "data": {"label": "L", "apiKey": "k", "_x": 1}}]}
        shown = project_document(document, rules(("nodes.data.apiKey",), ("nodes.id", "nodes.data"), underscore=True))
        assert shown == {"_id": 1, "nodes": [{"id": 1, "data": {"label": "L"}}]}

    @pytest.mark.parametrize(
        ("path", "expected"), [(("a",), False), (("a", "b"), True), (("a", "b", "c"), True), (("x",), False)]
    )
    def test_visible_as_is(self, path: tuple[str, ...], expected: bool) -> None:
        """Only allowed paths are shown as is; their ancestors are mere containers."""
        assert is_visible_as_is(rules(allow=("a.b",)), path) is expected


def update(
    updated: dict[str, Any] | None = None,
    removed: tuple[str, ...] = (),
    truncated: tuple[tuple[str, int], ...] = (),
    disambiguated: dict[str, Any] | None = None,
) -> UpdateDescription:
    return UpdateDescription(updated or {}, removed, truncated, disambiguated or {})


class TestProjectUpdate:
    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            (update({"nodes.3.position.x": 5}), update({"nodes.3.position.x": 5})),
            (update({"nodes.3.data.credentials.apiKey": "k", "t": 1}), update({"t": 1})),
            (update({"nodes.3.data.credentials": {"apiKey": "k"}, "t": 1}), update({"t": 1})),
            (
                update({"nodes.3": {"id": "n3", "data": {"label": "L", "credentials": {"apiKey": "k"}}}}),
                update({"nodes.3": {"id": "n3", "data": {"label": "L"}}}),
            ),
            (
                update({"nodes": [{"data": {"credentials": 1, "x": 2}}]}),
                update({"nodes": [{"data": {"x": 2}}]}),
            ),
            (update({"nodes.3.data": {"credentials": 1}}), update({"nodes.3.data": {}})),
            (
                update({"nodes.3.data.credentials": None, "nodes.3.data.apiKey": "k"}),
                update({"nodes.3.data.apiKey": "k"}),
            ),
            (update(removed=("nodes.0.data.credentials", "t")), update(removed=("t",))),
            (update(truncated=(("nodes", 2),)), update(truncated=(("nodes", 2),))),
        ],
    )
    def test_strips_denied_parts(self, given: UpdateDescription, expected: UpdateDescription) -> None:
        """Denied keys go, and keys above a denied path keep only the visible part of their value."""
        assert project_update(given, rules(("nodes.*.data.credentials",))) == expected

    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            (update({"__v": 5, "title": "T"}), update({"title": "T"})),
            (update({"nodes.3._tmp": 1, "nodes.3.x": 2}), update({"nodes.3.x": 2})),
            (update({"nodes.3": {"_id": "o", "x": 1}}), update({"nodes.3": {"x": 1}})),
            (update(removed=("__v", "a._b", "c")), update(removed=("c",))),
        ],
    )
    def test_strips_underscore_names(self, given: UpdateDescription, expected: UpdateDescription) -> None:
        """Mongoose's ``__v`` and other ``_``-prefixed names are stripped from keys and values."""
        assert project_update(given, rules(underscore=True)) == expected

    def test_disambiguated_paths(self) -> None:
        """``disambiguatedPaths`` decides the components, and entries of removed keys go with them."""
        given = update(
            {"a.0.1": 1, "x.y": 2, "keep.me": 3},
            disambiguated={"a.0.1": ["a", 0, "1"], "x.y": ["x.y"], "keep.me": ["keep", "me"]},
        )
        shown = project_update(given, rules(("a.*.1", "z")))
        assert shown == update({"x.y": 2, "keep.me": 3}, disambiguated={"x.y": ["x.y"], "keep.me": ["keep", "me"]})

    def test_dotted_key_is_judged_by_the_path_it_spells(self) -> None:
        """A field literally named "a.b" is hidden by a rule for "a": dots cannot smuggle a denied field out."""
        given = update({"a.b": 1, "c.d": 2}, disambiguated={"a.b": ["a.b"], "c.d": ["c.d"]})
        assert project_update(given, rules(("a",))) == update({"c.d": 2}, disambiguated={"c.d": ["c.d"]})

    def test_denied_array_element_keeps_a_placeholder(self) -> None:
        """A key naming a denied array element keeps a ``None`` value, as the projected documents do."""
        given = update({"tags.3": "secret", "tags.2.name": "x", "t": 1})
        assert project_update(given, rules(("tags.*",))) == update({"tags.3": None, "t": 1})

    def test_unchanged_update_is_returned_as_is(self) -> None:
        """When nothing is hidden, the same object comes back."""
        given = update({"a": 1}, ("b",), (("c", 1),))
        assert project_update(given, rules(("secret",), underscore=True)) is given

    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            (update({"title": "T", "body": "B"}), update({"title": "T"})),
            (update({"a": {"b": 1, "c": 2}}), update({"a": {"b": 1}})),
            (update({"a": 5}), update(removed=("a",))),
            (update({"list.2": 5}), update({"list.2": None})),
            (update({"a.c": 1}), update()),
            (update(removed=("a", "a.b", "a.c", "body")), update(removed=("a", "a.b"))),
        ],
    )
    def test_allow_list(self, given: UpdateDescription, expected: UpdateDescription) -> None:
        """In allow-list mode keys outside every allowed path go and ancestors keep only allowed parts."""
        assert project_update(given, rules(allow=("title", "a.b", "list.x"))) == expected


class TestProjectDocuments:
    def test_matches_independent_projections(self) -> None:
        """Projecting the pair gives what projecting each image alone gives."""
        root = rules(("nodes.*.data.credentials",), underscore=True)
        after = copy.deepcopy(CANVAS)
        after["nodes"][1]["data"]["label"] = "changed"
        after["nodes"].append({"id": "n2", "_x": 1})
        del after["flowId"]
        shown_after, shown_before = project_documents(after, CANVAS, root)
        assert shown_after == project_document(after, root)
        assert shown_before == project_document(CANVAS, root)

    def test_shares_unchanged_subtrees(self) -> None:
        """Equal parts of the two images come out as the same objects, which makes diffing cheap."""
        root = rules(("nodes.*.data.credentials",), underscore=True)
        after = copy.deepcopy(CANVAS)
        after["nodes"][1]["id"] = "renamed"
        shown_after, shown_before = project_documents(after, CANVAS, root)
        assert shown_after["nodes"][0] is shown_before["nodes"][0]
        assert shown_after["nodes"][1]["data"] is shown_before["nodes"][1]["data"]


class TestVisibilityCompilation:
    def test_identity_without_rules(self) -> None:
        """No deny, no allow and no underscore rule compile to a no-op."""
        assert Visibility().is_identity
        assert not Visibility(deny_underscore=True).is_identity

    def test_state_limit(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Pattern sets that need too many states fail at construction instead of growing without bound."""
        monkeypatch.setattr(visibility, "MAX_STATES", 3)
        with pytest.raises(ValueError, match="more than 3"):
            Visibility([split_pattern("a.b.c.d"), split_pattern("*.x.y")])
