"""Tests for ``RouteStage``: event type and flow id."""

from __future__ import annotations

from typing import Any

import pytest

from filters import ChangeEvent, Drop, InvalidRouteError, Route, RouteStage, UpdateDescription

ROUTE = Route("flowboards", "flowboard.changed")


def event(**fields: Any) -> ChangeEvent:
    fields.setdefault("operation", "update")
    return ChangeEvent(collection="flowboards", document_id=fields.pop("document_id", "b1"), **fields)


class TestRouteStage:
    @pytest.mark.parametrize(
        ("fields", "expected"),
        [
            ({"full_document": {"flowId": "post"}, "full_document_before_change": {"flowId": "pre"}}, "post"),
            ({"full_document": {"other": 1}, "full_document_before_change": {"flowId": "pre"}}, "pre"),
            ({"full_document_before_change": {"flowId": "pre"}, "operation": "delete"}, "pre"),
            ({"update_description": UpdateDescription({"flowId": "moved"})}, "moved"),
            ({"full_document": {"flowId": 42}, "operation": "insert"}, "42"),
            ({"full_document": {"flowId": 0}, "operation": "insert"}, "0"),
            ({"document_key": {"flowId": "shard", "_id": "b1"}, "operation": "delete"}, "shard"),
        ],
    )
    def test_reads_flow_id_in_order(self, fields: dict[str, Any], expected: str) -> None:
        """The flow id comes from the first source that has it: post-image, pre-image, update, documentKey."""
        result = RouteStage(ROUTE)(event(**fields))
        assert isinstance(result, ChangeEvent)
        assert (result.flow_id, result.event_type) == (expected, "flowboard.changed")

    @pytest.mark.parametrize(
        ("updated", "disambiguated", "expected"),
        [
            ({"meta.flowId": "exact"}, {}, "exact"),
            ({"meta": {"flowId": "parent", "x": 1}}, {}, "parent"),
            ({"other": 1, "meta": {"flowId": "second"}}, {}, "second"),
            ({"meta.flowId": "dis"}, {"meta.flowId": ["meta", "flowId"]}, "dis"),
        ],
    )
    def test_reads_nested_path_from_update(
        self, updated: dict[str, Any], disambiguated: dict[str, Any], expected: str
    ) -> None:
        """A nested flow id path matches an exact ``updatedFields`` key or a parent of it."""
        stage = RouteStage(Route("flowboards", "t", flow_id_path="meta.flowId"))
        result = stage(event(update_description=UpdateDescription(updated, disambiguated_paths=disambiguated)))
        assert isinstance(result, ChangeEvent) and result.flow_id == expected

    def test_dotted_key_in_update_is_not_the_path(self) -> None:
        """A top-level field literally named ``meta.flowId`` is not the nested path."""
        stage = RouteStage(Route("flowboards", "t", flow_id_path="meta.flowId"))
        update = UpdateDescription({"meta.flowId": "x"}, disambiguated_paths={"meta.flowId": ("meta.flowId",)})
        result = stage(event(update_description=update))
        assert result == Drop("unroutable", detail="meta.flowId missing")

    @pytest.mark.parametrize(
        ("fields", "expected"),
        [
            ({"document_id": "b1"}, "b1"),
            ({"document_id": 7}, "7"),
            ({"document_key": {"_id": "key"}, "document_id": "id"}, "key"),
            ({"full_document": {"_id": "doc"}, "document_id": "id"}, "doc"),
        ],
    )
    def test_id_path(self, fields: dict[str, Any], expected: str) -> None:
        """``flow_id_path="_id"`` routes by the document's own id."""
        result = RouteStage(Route("flows", "flow.changed", flow_id_path="_id"))(event(operation="delete", **fields))
        assert isinstance(result, ChangeEvent) and result.flow_id == expected

    @pytest.mark.parametrize(
        ("full_document", "detail"),
        [
            ({}, "flowId missing"),
            ({"flowId": None}, "flowId has type NoneType"),
            ({"flowId": {"$oid": "x"}}, "flowId has type dict"),
            ({"flowId": ["a"]}, "flowId has type list"),
            ({"flowId": True}, "flowId has type bool"),
            ({"flowId": 1.5}, "flowId has type float"),
            ({"flowId": ""}, "flowId is empty"),
            ({"flowId": "x" * 257}, "flowId is longer than 256 characters"),
        ],
    )
    def test_unroutable(self, full_document: dict[str, Any], detail: str) -> None:
        """Anything but a non-empty string of at most 256 characters or an int is unroutable."""
        result = RouteStage(ROUTE)(event(operation="insert", full_document=full_document))
        assert result == Drop("unroutable", detail=detail)

    def test_longest_flow_id_is_accepted(self) -> None:
        """Exactly 256 characters is still a flow id."""
        result = RouteStage(ROUTE)(event(operation="insert", full_document={"flowId": "x" * 256}))
        assert isinstance(result, ChangeEvent) and result.flow_id == "x" * 256

    def test_update_without_images_or_key_is_unroutable(self) -> None:
        """An update that does not touch the flow id and carries no image cannot be routed."""
        result = RouteStage(ROUTE)(event(update_description=UpdateDescription({"title": "x"})))
        assert result == Drop("unroutable", detail="flowId missing")

    def test_does_not_mutate_event(self) -> None:
        """The input event keeps its (empty) routing fields."""
        original = event(operation="insert", full_document={"flowId": "f"})
        RouteStage(ROUTE)(original)
        assert original.flow_id is None and original.event_type is None

    @pytest.mark.parametrize(
        ("route", "message"),
        [
            (Route("", "t"), "collection must be a non-empty string"),
            (Route("c", ""), "event_type must be a non-empty string"),
            (Route("c", "t", flow_id_path=""), "bad flow_id_path"),
            (Route("c", "t", flow_id_path="a..b"), "bad flow_id_path"),
        ],
    )
    def test_rejects_bad_routes(self, route: Route, message: str) -> None:
        """Route problems are reported at construction, naming the value."""
        with pytest.raises(InvalidRouteError, match=message):
            RouteStage(route)
