"""Tests for ``RouteStage``: event type, flow id and origin."""

from __future__ import annotations

from typing import Any

import pytest

from filters import ChangeEvent, Drop, InvalidRouteError, Pipeline, Route, RouteStage, UpdateDescription

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
            (Route("c", "t", origin_field="meta..id"), "bad origin_field"),
        ],
    )
    def test_rejects_bad_routes(self, route: Route, message: str) -> None:
        """Route problems are reported at construction, naming the value."""
        with pytest.raises(InvalidRouteError, match=message):
            RouteStage(route)


STAMPED = Route("flowboards", "SYNC_CANVAS", origin_field="meta.mutationId")


class TestOrigin:
    @pytest.mark.parametrize(
        ("fields", "expected"),
        [
            ({"operation": "insert", "full_document": {"flowId": "f", "meta": {"mutationId": "m1"}}}, "m1"),
            ({"operation": "replace", "full_document": {"flowId": "f", "meta": {"mutationId": 7}}}, "7"),
            (
                {
                    "full_document": {"flowId": "f", "meta": {"mutationId": "m2"}},
                    "update_description": UpdateDescription({"x": 1, "meta.mutationId": "m2"}),
                },
                "m2",
            ),
            (
                {
                    "full_document": {"flowId": "f", "meta": {"mutationId": "m3"}},
                    "update_description": UpdateDescription({"meta": {"mutationId": "m3", "by": "a"}}),
                },
                "m3",
            ),
        ],
    )
    def test_the_write_that_set_it(self, fields: dict[str, Any], expected: str) -> None:
        """The origin is the mutation id the write itself set, in the document or the update."""
        result = RouteStage(STAMPED)(event(**fields))
        assert isinstance(result, ChangeEvent) and result.origin == expected

    @pytest.mark.parametrize(
        "fields",
        [
            # The post-image still holds the id of an earlier write: this update set none.
            {
                "full_document": {"flowId": "f", "meta": {"mutationId": "old"}},
                "update_description": UpdateDescription({"x": 2}),
            },
            {"operation": "insert", "full_document": {"flowId": "f", "meta": {"mutationId": {"$oid": "x"}}}},
            {"operation": "insert", "full_document": {"flowId": "f", "meta": {"mutationId": True}}},
            {"operation": "insert", "full_document": {"flowId": "f", "meta": {"mutationId": ""}}},
            {"operation": "insert", "full_document": {"flowId": "f", "meta": {"mutationId": "m" * 129}}},
            {"operation": "insert", "full_document": {"flowId": "f", "meta": "flat"}},
            {"operation": "delete", "full_document_before_change": {"flowId": "f", "meta": {"mutationId": "m"}}},
        ],
    )
    def test_no_origin(self, fields: dict[str, Any]) -> None:
        """Stale, odd, empty, oversized or absent ids are no origin; the event is still routed."""
        result = RouteStage(STAMPED)(event(**fields))
        assert isinstance(result, ChangeEvent) and result.flow_id == "f" and result.origin is None

    def test_without_origin_field(self) -> None:
        """A route without ``origin_field`` reads none and publishes the field like any other."""
        document = {"_id": "b1", "flowId": "f", "meta": {"mutationId": "m1"}}
        result = Pipeline([Route("flowboards", "SYNC_CANVAS")]).process(
            event(operation="insert", full_document=document)
        )
        assert isinstance(result, ChangeEvent) and result.origin is None
        assert result.full_document == document

    def test_never_published(self) -> None:
        """The pipeline strips the mutation id from the document, the update and the patch."""
        before = {"_id": "b1", "flowId": "f", "x": 1, "meta": {"mutationId": "m0", "by": "a"}}
        after = {"_id": "b1", "flowId": "f", "x": 2, "meta": {"mutationId": "m1", "by": "a"}}
        result = Pipeline([STAMPED]).process(
            event(
                full_document=after,
                full_document_before_change=before,
                update_description=UpdateDescription({"x": 2, "meta.mutationId": "m1"}),
            )
        )
        assert isinstance(result, ChangeEvent) and result.origin == "m1"
        assert result.full_document == {"_id": "b1", "flowId": "f", "x": 2, "meta": {"by": "a"}}
        assert result.update_description == UpdateDescription({"x": 2})
        assert result.patch == ({"op": "replace", "path": "/x", "value": 2},)

    def test_a_stamp_alone_publishes_nothing(self) -> None:
        """An update that only re-stamps the id changes nothing a client sees."""
        before = {"_id": "b1", "flowId": "f", "meta": {"mutationId": "m0"}}
        after = {"_id": "b1", "flowId": "f", "meta": {"mutationId": "m1"}}
        result = Pipeline([STAMPED]).process(
            event(
                full_document=after,
                full_document_before_change=before,
                update_description=UpdateDescription({"meta.mutationId": "m1"}),
            )
        )
        assert isinstance(result, Drop) and result.reason == "denied-only"
