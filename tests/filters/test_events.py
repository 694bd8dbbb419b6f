"""Tests for ``filters._events``: the fast event copies keep every field."""

from __future__ import annotations

import dataclasses
from typing import Any

from filters import ChangeEvent, UpdateDescription
from filters._events import with_documents, with_patch, with_route

FULL = ChangeEvent(
    collection="c",
    operation="update",
    document_id="id",
    full_document={"a": 1},
    full_document_before_change={"a": 0},
    update_description=UpdateDescription({"a": 1}),
    cluster_time=(1, 2),
    wall_time="2025-01-01T00:00:00Z",
    document_key={"_id": "id"},
    event_type="t",
    flow_id="f",
    patch=({"op": "add", "path": "/a", "value": 1},),
    origin="m-1",
)


def unchanged_fields(copy: ChangeEvent, changed: set[str]) -> dict[str, Any]:
    return {
        field.name: getattr(copy, field.name) is getattr(FULL, field.name)
        for field in dataclasses.fields(ChangeEvent)
        if field.name not in changed
    }


class TestEventCopies:
    def test_with_route(self) -> None:
        """``with_route`` changes the routing fields and keeps every other field."""
        copy = with_route(FULL, "t2", "f2", "m-2")
        assert (copy.event_type, copy.flow_id, copy.origin) == ("t2", "f2", "m-2")
        assert all(unchanged_fields(copy, {"event_type", "flow_id", "origin"}).values())

    def test_with_documents(self) -> None:
        """``with_documents`` changes the images and update and keeps every other field."""
        copy = with_documents(FULL, {"b": 1}, None, None)
        assert (copy.full_document, copy.full_document_before_change, copy.update_description) == ({"b": 1}, None, None)
        assert all(
            unchanged_fields(copy, {"full_document", "full_document_before_change", "update_description"}).values()
        )

    def test_with_patch(self) -> None:
        """``with_patch`` changes the patch and post-image and keeps every other field."""
        copy = with_patch(FULL, None, {"c": 1})
        assert (copy.patch, copy.full_document) == (None, {"c": 1})
        assert all(unchanged_fields(copy, {"patch", "full_document"}).values())
