"""Tests for ``DropStage``: ``drop_when`` predicates on the document after the change."""

from __future__ import annotations

from typing import Any

import pytest

from filters import ChangeEvent, Drop, DropStage, InvalidRouteError, Route, UpdateDescription

PRIVATE = {"visibility": "private"}
PUBLIC = {"visibility": "public"}
ROUTE = Route("flowboards", "t", drop_when=({"visibility": "private"}, {"archived": {"$exists": True}}))


def event(operation: Any, **fields: Any) -> ChangeEvent:
    return ChangeEvent(collection="flowboards", operation=operation, document_id="b1", **fields)


class TestDropStage:
    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            (event("insert", full_document=PRIVATE), Drop("private", detail="drop_when[0]")),
            (event("replace", full_document={"archived": None}), Drop("private", detail="drop_when[1]")),
            (
                event("update", full_document=PRIVATE, full_document_before_change=PUBLIC),
                Drop("private", "drop_when[0]"),
            ),
            (event("delete", full_document_before_change=PRIVATE), Drop("private", detail="drop_when[0]")),
        ],
    )
    def test_drops_private_documents(self, given: ChangeEvent, expected: Drop) -> None:
        """A document matching any predicate is dropped as private, naming the predicate's index."""
        assert DropStage(ROUTE)(given) == expected

    @pytest.mark.parametrize(
        "given",
        [
            event("insert", full_document=PUBLIC),
            event("update", full_document=PUBLIC, full_document_before_change=PRIVATE),
            event("delete", full_document_before_change=PUBLIC),
        ],
    )
    def test_passes_public_documents(self, given: ChangeEvent) -> None:
        """Documents that match no predicate pass unchanged (move-in is not handled yet)."""
        assert DropStage(ROUTE)(given) is given

    @pytest.mark.parametrize(
        ("given", "detail"),
        [
            (event("update", update_description=UpdateDescription({"x": 1})), "pre-images needed to check drop_when"),
            (event("update", full_document_before_change=PUBLIC), "pre-images needed to check drop_when"),
            (event("delete"), "pre-images needed to check drop_when"),
            (event("delete", full_document=PUBLIC), "pre-images needed to check drop_when"),
            (event("insert"), "fullDocument needed to check drop_when"),
        ],
    )
    def test_unknown_document_is_unverifiable(self, given: ChangeEvent, detail: str) -> None:
        """Without the document to check, a route with predicates drops the event (secure by default)."""
        assert DropStage(ROUTE)(given) == Drop("unverifiable", detail=detail)

    def test_no_predicates_passes_everything(self) -> None:
        """A route without ``drop_when`` never drops, even without images."""
        stage = DropStage(Route("flowboards", "t"))
        given = event("delete")
        assert stage.is_noop and stage(given) is given

    @pytest.mark.parametrize(
        ("drop_when", "message"),
        [
            ({"visibility": "private"}, "drop_when must be a sequence"),
            ("visibility", "drop_when must be a sequence"),
            (({"a": {"$regex": "x"}},), "unsupported operator"),
            (({},), "empty predicate"),
        ],
    )
    def test_rejects_bad_predicates(self, drop_when: Any, message: str) -> None:
        """Bad predicates raise ``InvalidRouteError`` naming the route and the value."""
        with pytest.raises(InvalidRouteError, match=message) as caught:
            DropStage(Route("flowboards", "t", drop_when=drop_when))
        assert caught.value.collection == "flowboards"
        assert "flowboards" in str(caught.value)
