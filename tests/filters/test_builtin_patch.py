"""Tests for ``PatchStage``: JSON Patch for update events."""

from __future__ import annotations

from typing import Any

import pytest

from filters import ChangeEvent, Drop, PatchStage, Route, UpdateDescription, apply_patch

ROUTE = Route("flowboards", "t")


def event(operation: Any = "update", **fields: Any) -> ChangeEvent:
    return ChangeEvent(collection="flowboards", operation=operation, document_id="b1", **fields)


class TestPatchStage:
    @pytest.mark.parametrize("operation", ["insert", "replace", "delete"])
    def test_other_operations_have_no_patch(self, operation: Any) -> None:
        """Only updates get a patch; a stale one is cleared."""
        result = PatchStage(ROUTE)(
            event(operation, full_document={"a": 1}, patch=({"op": "add", "path": "/a", "value": 1},))
        )
        assert isinstance(result, ChangeEvent) and result.patch is None and result.full_document == {"a": 1}

    def test_diffs_both_images(self) -> None:
        """With both images the patch is their diff."""
        result = PatchStage(ROUTE)(
            event(full_document={"a": 2, "b": [1, 2]}, full_document_before_change={"a": 1, "b": [1]})
        )
        assert isinstance(result, ChangeEvent)
        assert result.patch == ({"op": "replace", "path": "/a", "value": 2}, {"op": "add", "path": "/b/1", "value": 2})

    def test_computes_missing_post_image(self) -> None:
        """With only a pre-image the post-image is computed from the update, set, and diffed."""
        before = {"nodes": [{"x": 1}], "t": "a", "gone": 1}
        given = UpdateDescription({"nodes.1": {"x": 2}, "t": "b"}, removed_fields=("gone",))
        result = PatchStage(ROUTE)(event(full_document_before_change=before, update_description=given))
        assert isinstance(result, ChangeEvent)
        assert result.full_document == {"nodes": [{"x": 1}, {"x": 2}], "t": "b"}
        assert result.patch is not None and apply_patch(before, result.patch) == result.full_document

    def test_conflicting_update_gives_no_patch(self) -> None:
        """An update description that does not fit the pre-image leaves the patch unknown."""
        result = PatchStage(ROUTE)(
            event(full_document_before_change={"a": 1}, update_description=UpdateDescription({"a.b": 1}))
        )
        assert isinstance(result, ChangeEvent) and result.patch is None and result.full_document is None

    def test_translates_update_without_images(self) -> None:
        """Without images the update description is translated directly."""
        result = PatchStage(ROUTE)(event(update_description=UpdateDescription({"nodes.3.position.x": 5}, ("a",))))
        assert isinstance(result, ChangeEvent)
        assert result.patch == (
            {"op": "add", "path": "/nodes/3/position/x", "value": 5},
            {"op": "remove", "path": "/a"},
        )

    @pytest.mark.parametrize(
        "given",
        [
            UpdateDescription({"nodes.3": {"id": "n3"}}),
            UpdateDescription({"a": 1}, truncated_arrays=(("nodes", 2),)),
            None,
        ],
    )
    def test_unknowable_without_images(self, given: UpdateDescription | None) -> None:
        """A push by index, a truncation or a missing update description leaves ``patch=None``."""
        result = PatchStage(ROUTE)(event(update_description=given))
        assert isinstance(result, ChangeEvent) and result.patch is None

    def test_post_image_only_translates_update(self) -> None:
        """A post-image without a pre-image cannot be diffed, so the update is translated."""
        result = PatchStage(ROUTE)(event(full_document={"a": 1}, update_description=UpdateDescription({"a": 1})))
        assert isinstance(result, ChangeEvent) and result.patch == ({"op": "add", "path": "/a", "value": 1},)

    def test_no_visible_change_is_denied_only(self) -> None:
        """Equal (projected) images mean the update changed nothing the client may see."""
        result = PatchStage(ROUTE)(event(full_document={"a": 1}, full_document_before_change={"a": 1}))
        assert result == Drop("denied-only", detail="no visible change")

    @pytest.mark.parametrize(
        ("removed", "expected_known"), [(("a.b",), True), (("a.b.c",), True), (("a",), False), (("x",), False)]
    )
    def test_allow_list_removals(self, removed: tuple[str, ...], expected_known: bool) -> None:
        """In allow-list mode removing a mere ancestor of an allowed path is not a safe patch."""
        stage = PatchStage(Route("flowboards", "t", allow=("a.b",)))
        result = stage(event(update_description=UpdateDescription(removed_fields=removed)))
        assert isinstance(result, ChangeEvent) and (result.patch is not None) is expected_known
