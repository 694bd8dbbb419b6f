"""Tests for ``StripStage`` and ``AllowStage``: both images and the update description, consistently."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from filters import AllowStage, ChangeEvent, Drop, InvalidRouteError, Route, StripStage, UpdateDescription

DENY = Route("flowboards", "t", deny=("nodes.*.data.credentials",))
ALLOW = Route("flowboards", "t", allow=("title", "nodes.id", "nodes.position"), deny=("nodes.position.secret",))

BEFORE: dict[str, Any] = {
    "_id": "b1",
    "__v": 1,
    "title": "T",
    "body": "B",
    "nodes": [{"id": "n0", "_tmp": 0, "position": {"x": 1, "secret": 2}, "data": {"credentials": {"apiKey": "k"}}}],
}


def update_event(after: dict[str, Any] | None, before: dict[str, Any] | None, update: UpdateDescription) -> ChangeEvent:
    return ChangeEvent(
        collection="flowboards",
        operation="update",
        document_id="b1",
        full_document=after,
        full_document_before_change=before,
        update_description=update,
    )


class TestStripStage:
    def test_strips_all_three_places(self) -> None:
        """Images and the update lose denied and ``_``-prefixed paths in the same way."""
        after = copy.deepcopy(BEFORE)
        after["nodes"][0]["data"]["credentials"]["apiKey"] = "k2"
        after["__v"] = 2
        after["title"] = "T2"
        given = UpdateDescription({"nodes.0.data.credentials.apiKey": "k2", "__v": 2, "title": "T2"})
        result = StripStage(DENY)(update_event(after, BEFORE, given))
        assert isinstance(result, ChangeEvent)
        assert result.full_document is not None and result.full_document_before_change is not None
        assert result.full_document["nodes"][0] == {"id": "n0", "position": {"x": 1, "secret": 2}, "data": {}}
        assert "__v" not in result.full_document_before_change
        assert result.update_description == UpdateDescription({"title": "T2"})

    @pytest.mark.parametrize(
        "given",
        [
            UpdateDescription({"nodes.0.data.credentials.apiKey": "k2"}),
            UpdateDescription({"__v": 2}),
            UpdateDescription({"nodes.0._tmp": 3}, removed_fields=("nodes.0.data.credentials",)),
        ],
    )
    def test_denied_only_update_is_dropped(self, given: UpdateDescription) -> None:
        """An update that touched nothing but hidden paths yields no event."""
        assert StripStage(DENY)(update_event(None, None, given)) == Drop("denied-only")

    def test_empty_update_is_not_denied_only(self) -> None:
        """An update description that was already empty is left to the later stages."""
        given = update_event(None, None, UpdateDescription())
        assert StripStage(DENY)(given) is given

    def test_unchanged_event_is_returned_as_is(self) -> None:
        """When nothing is hidden the same event object comes back."""
        given = ChangeEvent("flowboards", "insert", "b1", full_document={"_id": "b1", "title": "x"})
        assert StripStage(DENY)(given) is given

    def test_does_not_mutate_input(self) -> None:
        """The input documents are left untouched."""
        before = copy.deepcopy(BEFORE)
        StripStage(DENY)(update_event(copy.deepcopy(BEFORE), before, UpdateDescription({"title": "x"})))
        assert before == BEFORE

    @pytest.mark.parametrize(
        ("deny", "message"), [(("a..b",), "bad deny pattern"), (("a.b*",), "whole path component"), ("a.b", "sequence")]
    )
    def test_rejects_bad_patterns(self, deny: Any, message: str) -> None:
        """Bad deny patterns raise ``InvalidRouteError`` naming the route and the pattern."""
        with pytest.raises(InvalidRouteError, match=message) as caught:
            StripStage(Route("flowboards", "t", deny=deny))
        assert caught.value.collection == "flowboards"


class TestAllowStage:
    def test_keeps_only_allowed_paths(self) -> None:
        """Only allowed paths, the containers leading to them and ``_id`` pass; deny and underscore still apply."""
        result = AllowStage(ALLOW)(ChangeEvent("flowboards", "insert", "b1", full_document=BEFORE))
        assert isinstance(result, ChangeEvent)
        assert result.full_document == {"_id": "b1", "title": "T", "nodes": [{"id": "n0", "position": {"x": 1}}]}

    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            (UpdateDescription({"title": "x", "body": "y"}), UpdateDescription({"title": "x"})),
            (
                UpdateDescription({"nodes.0": {"id": "n", "data": 1, "position": {"secret": 1, "y": 2}}}),
                UpdateDescription({"nodes.0": {"id": "n", "position": {"y": 2}}}),
            ),
            (UpdateDescription({"nodes.0.position.x": 5}), UpdateDescription({"nodes.0.position.x": 5})),
        ],
    )
    def test_filters_update(self, given: UpdateDescription, expected: UpdateDescription) -> None:
        """Update keys outside the allow list go; ancestors keep only allowed parts."""
        result = AllowStage(ALLOW)(update_event(None, None, given))
        assert isinstance(result, ChangeEvent) and result.update_description == expected

    @pytest.mark.parametrize(
        "given",
        [
            UpdateDescription({"body": "y"}),
            UpdateDescription({"nodes.0.data.x": 1}),
            UpdateDescription({"nodes.0.position.secret": 1}),
        ],
    )
    def test_nothing_allowed_is_denied_only(self, given: UpdateDescription) -> None:
        """An update outside every allowed path yields no event."""
        assert AllowStage(ALLOW)(update_event(None, None, given)) == Drop("denied-only")

    def test_needs_allow_list(self) -> None:
        """``AllowStage`` refuses a route in deny-list mode."""
        with pytest.raises(InvalidRouteError, match="allow list"):
            AllowStage(DENY)
