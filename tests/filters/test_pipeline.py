"""Tests for ``Pipeline``: construction checks and end-to-end processing."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import jsonpatch
import pytest

from filters import (
    ChangeEvent,
    Drop,
    InvalidRouteError,
    Pipeline,
    Route,
    UpdateDescription,
    apply_patch,
)

FLOWBOARDS = Route(
    "flowboards",
    "flowboard.changed",
    deny=("nodes.*.data.credentials",),
    drop_when=({"visibility": "private"},),
)
FLOWS = Route("flows", "flow.changed", flow_id_path="_id", allow=("name", "status"))


def canvas(nodes: int = 5) -> dict[str, Any]:
    return {
        "_id": "b1",
        "flowId": "f1",
        "__v": 0,
        "visibility": "team",
        "nodes": [
            {
                "id": f"n{index}",
                "_id": f"o{index}",
                "type": "llm",
                "position": {"x": index, "y": index},
                "data": {"label": f"N{index}", "credentials": {"apiKey": f"sk-{index}"}},
            }
            for index in range(nodes)
        ],
    }


def update_event(
    after: dict[str, Any] | None,
    before: dict[str, Any] | None,
    update: UpdateDescription,
    collection: str = "flowboards",
) -> ChangeEvent:
    return ChangeEvent(
        collection=collection,
        operation="update",
        document_id="b1",
        full_document=after,
        full_document_before_change=before,
        update_description=update,
        document_key={"_id": "b1"},
    )


def no_secrets(value: Any) -> bool:
    text = repr(value)
    return "sk-" not in text and "'_id': 'o" not in text and "__v" not in text


class TestPipelineConstruction:
    def test_exposes_routes(self) -> None:
        """``routes`` maps collections to routes (read-only) and ``collections`` keeps their order."""
        pipeline = Pipeline([FLOWBOARDS, FLOWS])
        assert pipeline.collections == ("flowboards", "flows")
        assert pipeline.routes["flows"] is FLOWS
        with pytest.raises(TypeError):
            pipeline.routes["x"] = FLOWS  # type: ignore[index]

    @pytest.mark.parametrize(
        ("routes", "stages", "message"),
        [
            ([FLOWBOARDS, FLOWBOARDS], None, "duplicate route"),
            ([Route("c", "t", deny=("a..b",))], None, "bad deny pattern"),
            ([Route("c", "t", allow=("a.*x",))], None, "bad allow pattern"),
            ([Route("c", "t", drop_when=({"a": {"$gt": 1}},))], None, "unsupported operator"),
            ([Route("c", "t", flow_id_path="")], None, "bad flow_id_path"),
            (["flowboards"], None, "Route instances"),
            ([FLOWBOARDS], {"flows": []}, "without a route"),
            ([FLOWBOARDS], {"*": [42]}, "must be callable"),
            ([FLOWBOARDS], {"flowboards": len}, "sequence of callables"),
        ],
    )
    def test_rejects_bad_configuration(self, routes: Any, stages: Any, message: str) -> None:
        """Configuration problems raise ``InvalidRouteError`` at construction, naming the value."""
        with pytest.raises(InvalidRouteError, match=message):
            Pipeline(routes, stages=stages)

    def test_error_names_route_and_value(self) -> None:
        """The error carries the route's collection and the bad value as attributes and in its message."""
        with pytest.raises(InvalidRouteError) as caught:
            Pipeline([Route("boards", "t", deny=("ok", "a..b"))])
        assert (caught.value.collection, caught.value.value) == ("boards", "a..b")
        assert "'boards'" in str(caught.value) and "'a..b'" in str(caught.value)


class TestPipelineProcess:
    def test_canvas_update_end_to_end(self) -> None:
        """A node move is routed, stripped and turned into a one-operation patch."""
        before = canvas()
        after = copy.deepcopy(before)
        after["nodes"][3]["position"]["x"] = 99
        after["__v"] = 1
        result = Pipeline([FLOWBOARDS]).process(
            update_event(after, before, UpdateDescription({"nodes.3.position.x": 99, "__v": 1}))
        )
        assert isinstance(result, ChangeEvent)
        assert (result.event_type, result.flow_id) == ("flowboard.changed", "f1")
        assert result.patch == ({"op": "replace", "path": "/nodes/3/position/x", "value": 99},)
        assert result.update_description == UpdateDescription({"nodes.3.position.x": 99})
        assert no_secrets(result)

    def test_push_with_credentials(self) -> None:
        """A ``$push`` of a node with credentials publishes the node without them."""
        before = canvas(3)
        pushed = {"id": "n3", "data": {"label": "new", "credentials": {"apiKey": "sk-new"}}}
        after = copy.deepcopy(before)
        after["nodes"].append(pushed)
        update = UpdateDescription({"nodes.3": pushed})
        for images in [(after, before), (None, before), (None, None)]:
            route = Route("flowboards", "t", flow_id_path="_id", deny=("nodes.*.data.credentials",))
            result = Pipeline([route]).process(update_event(*images, update=update))
            assert isinstance(result, ChangeEvent) and no_secrets(result), images
        assert isinstance(result, ChangeEvent) and result.patch is None

    def test_pull_and_unset(self) -> None:
        """A ``$pull`` (whole array) and ``$unset`` together give a patch that rebuilds the post-image."""
        before = canvas(3)
        after = copy.deepcopy(before)
        del after["nodes"][1]
        del after["visibility"]
        update = UpdateDescription({"nodes": after["nodes"]}, removed_fields=("visibility",))
        result = Pipeline([Route("flowboards", "t", deny=("nodes.*.data.credentials",))]).process(
            update_event(after, before, update)
        )
        assert isinstance(result, ChangeEvent) and result.patch is not None
        assert result.full_document_before_change is not None
        assert apply_patch(result.full_document_before_change, result.patch) == result.full_document
        assert no_secrets(result)

    def test_pipeline_update_with_truncation(self) -> None:
        """A pipeline-style update with ``truncatedArrays`` is diffed when the pre-image is known."""
        before = {"_id": "b1", "flowId": "f1", "arr": [{"a": 1, "b": 1}, {"a": 2, "b": 2}, {"a": 3}]}
        update = UpdateDescription({"arr.1.b": 3}, truncated_arrays=(("arr", 2),))
        result = Pipeline([Route("flowboards", "t", deny=("arr.a",))]).process(update_event(None, before, update))
        assert isinstance(result, ChangeEvent)
        assert result.full_document == {"_id": "b1", "flowId": "f1", "arr": [{"b": 1}, {"b": 3}]}
        assert result.patch == ({"op": "replace", "path": "/arr/1/b", "value": 3}, {"op": "remove", "path": "/arr/2"})

    def test_private_document_is_dropped(self) -> None:
        """``drop_when`` sees the post-image computed from the pre-image and the update."""
        before = canvas(1)
        result = Pipeline([FLOWBOARDS]).process(
            update_event(None, before, UpdateDescription({"visibility": "private"}))
        )
        assert result == Drop("private", detail="drop_when[0]")

    def test_update_without_images_on_guarded_route(self) -> None:
        """A route with predicates cannot publish an update without images."""
        result = Pipeline([FLOWBOARDS]).process(update_event(None, None, UpdateDescription({"flowId": "f1", "x": 1})))
        assert result == Drop("unverifiable", detail="pre-images needed to check drop_when")

    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            (
                ChangeEvent("other", "insert", 1, full_document={}),
                Drop("no-route", detail="no route for collection 'other'"),
            ),
            (
                ChangeEvent("flowboards", "insert", 1, full_document={"x": 1}),
                Drop("unroutable", detail="flowId missing"),
            ),
        ],
    )
    def test_routing_drops(self, given: ChangeEvent, expected: Drop) -> None:
        """Events without a route or a flow id are dropped with a reason."""
        assert Pipeline([FLOWBOARDS]).process(given) == expected

    def test_allow_list_route(self) -> None:
        """An allow-list route by ``_id`` publishes only the allowed fields."""
        before = {"_id": "f1", "name": "A", "status": "draft", "spec": {"k": 1}}
        after = {**before, "status": "live", "spec": {"k": 2}}
        result = Pipeline([FLOWS]).process(
            update_event(after, before, UpdateDescription({"status": "live", "spec.k": 2}), collection="flows")
        )
        assert isinstance(result, ChangeEvent)
        assert result.flow_id == "f1"
        assert result.full_document == {"_id": "f1", "name": "A", "status": "live"}
        assert result.patch == ({"op": "replace", "path": "/status", "value": "live"},)

    def test_allow_list_hidden_only_change(self) -> None:
        """A change outside the allow list yields no event."""
        before = {"_id": "f1", "name": "A", "spec": {"k": 1}}
        after = {**before, "spec": {"k": 2}}
        result = Pipeline([FLOWS]).process(
            update_event(after, before, UpdateDescription({"spec.k": 2}), collection="flows")
        )
        assert result == Drop("denied-only")

    def test_denied_only_with_images(self) -> None:
        """A credentials-only change is dropped before any patch is built."""
        before = canvas(2)
        after = copy.deepcopy(before)
        after["nodes"][0]["data"]["credentials"]["apiKey"] = "sk-rotated"
        update = UpdateDescription({"nodes.0.data.credentials.apiKey": "sk-rotated"})
        assert Pipeline([FLOWBOARDS]).process(update_event(after, before, update)) == Drop("denied-only")

    def test_does_not_mutate_input(self) -> None:
        """Processing leaves the input event and its documents as they were."""
        before = canvas(2)
        after = copy.deepcopy(before)
        after["nodes"][1]["position"]["y"] = 7
        given = update_event(after, before, UpdateDescription({"nodes.1.position.y": 7}))
        frozen = copy.deepcopy(given)
        Pipeline([FLOWBOARDS]).process(given)
        assert given == frozen

    def test_patch_applies_with_jsonpatch(self) -> None:
        """The third-party ``jsonpatch`` library agrees with the patch."""
        before = canvas(4)
        after = copy.deepcopy(before)
        after["nodes"][2]["data"]["label"] = "renamed"
        after["nodes"].pop()
        after["title"] = "new"
        update = UpdateDescription({"nodes": after["nodes"], "title": "new"})
        result = Pipeline([FLOWBOARDS]).process(update_event(after, before, update))
        assert isinstance(result, ChangeEvent) and result.patch is not None
        assert jsonpatch.apply_patch(result.full_document_before_change, list(result.patch)) == result.full_document


def returns_none(event: ChangeEvent) -> None:
    return None


def explodes(event: ChangeEvent) -> ChangeEvent:
    raise KeyError(repr(event.full_document))


class TestUserStages:
    def test_run_after_projection_and_before_patch(self) -> None:
        """User stages see projected documents, ``"*"`` stages first, and patch sees their output."""
        seen: list[tuple[str, Any]] = []

        def shared(event: ChangeEvent) -> ChangeEvent:
            seen.append(("*", event.full_document))
            return event

        def own(event: ChangeEvent) -> ChangeEvent:
            seen.append(("own", event.patch))
            assert event.full_document is not None
            return dataclasses.replace(event, full_document={**event.full_document, "extra": 1})

        before = canvas(1)
        after = copy.deepcopy(before)
        after["nodes"][0]["position"]["x"] = 5
        pipeline = Pipeline([FLOWBOARDS], stages={"*": [shared], "flowboards": [own]})
        result = pipeline.process(update_event(after, before, UpdateDescription({"nodes.0.position.x": 5})))
        assert [name for name, _ in seen] == ["*", "own"]
        assert no_secrets(seen[0][1]) and seen[1][1] is None
        assert isinstance(result, ChangeEvent) and {"op": "add", "path": "/extra", "value": 1} in (result.patch or ())

    @pytest.mark.parametrize(
        ("stage", "expected"),
        [
            (returns_none, Drop("stage", detail="returns_none")),
            (explodes, Drop("stage-error", detail="explodes raised KeyError")),
            (lambda event: Drop("custom", "mine"), Drop("custom", "mine")),
            (lambda event: {"not": "an event"}, Drop("stage", detail="TestUserStages.<lambda>")),
        ],
    )
    def test_bad_results_become_drops(self, stage: Any, expected: Drop) -> None:
        """``None`` and non-events become ``Drop("stage")``; exceptions become value-free ``Drop("stage-error")``."""
        given = ChangeEvent(
            "flowboards", "insert", 1, full_document={"flowId": "f", "visibility": "team", "secret": "s3cr3t"}
        )
        result = Pipeline([FLOWBOARDS], stages={"flowboards": [stage]}).process(given)
        assert result == expected
        assert "s3cr3t" not in result.detail if isinstance(result, Drop) else True

    def test_named_callable(self) -> None:
        """A callable object's ``name`` attribute names it in drops."""

        class Guard:
            name = "guard"

            def __call__(self, event: ChangeEvent) -> ChangeEvent | Drop:
                return None  # type: ignore[return-value]

        given = ChangeEvent("flowboards", "insert", 1, full_document={"flowId": "f"})
        assert Pipeline([FLOWBOARDS], stages={"*": [Guard()]}).process(given) == Drop("stage", detail="guard")


class TestMoves:
    ROUTES = (Route("flow_nodes", "SYNC_CANVAS", flow_id_path="flowId", drop_when=({"visibility": "private"},)),)

    def update(self, before: dict, changes: dict) -> ChangeEvent:
        return ChangeEvent(
            collection="flow_nodes",
            operation="update",
            document_id="n1",
            full_document_before_change=before,
            update_description=UpdateDescription(updated_fields=changes),
            document_key={"_id": "n1"},
        )

    def test_flow_change_moves_the_document(self):
        """A changed flow id deletes the document from the old flow and inserts it into the new one."""
        result = Pipeline(self.ROUTES).process_all(self.update({"_id": "n1", "flowId": "a", "x": 1}, {"flowId": "b"}))
        assert not isinstance(result, Drop)
        out, into = result
        assert (out.flow_id, out.operation, out.full_document, out.patch) == ("a", "delete", None, None)
        assert (into.flow_id, into.operation, into.patch) == ("b", "insert", None)
        assert into.full_document == {"_id": "n1", "flowId": "b", "x": 1}

    def test_becoming_private_is_a_delete_without_the_private_state(self):
        """A document that turns private leaves its flow as a delete that carries nothing of it."""
        result = Pipeline(self.ROUTES).process_all(
            self.update({"_id": "n1", "flowId": "a", "secret": "s"}, {"visibility": "private"})
        )
        assert not isinstance(result, Drop)
        (out,) = result
        assert (out.flow_id, out.operation, out.full_document, out.full_document_before_change) == (
            "a",
            "delete",
            None,
            None,
        )
        assert out.update_description is None

    def test_becoming_public_is_an_insert(self):
        """A private document made public enters its flow as an insert of the filtered document."""
        result = Pipeline(self.ROUTES).process_all(
            self.update({"_id": "n1", "flowId": "a", "visibility": "private"}, {"visibility": "team"})
        )
        assert not isinstance(result, Drop)
        (into,) = result
        assert (into.flow_id, into.operation) == ("a", "insert")
        assert into.full_document == {"_id": "n1", "flowId": "a", "visibility": "team"}

    def test_private_stays_private(self):
        """Updates of a document that was and stays private publish nothing."""
        result = Pipeline(self.ROUTES).process_all(
            self.update({"_id": "n1", "flowId": "a", "visibility": "private"}, {"x": 2})
        )
        assert isinstance(result, Drop) and result.reason == "private"

    def test_ordinary_update_is_one_event(self):
        """An update that stays in its flow is the usual single update with a patch."""
        result = Pipeline(self.ROUTES).process_all(self.update({"_id": "n1", "flowId": "a", "x": 1}, {"x": 2}))
        assert not isinstance(result, Drop)
        (event,) = result
        assert (event.operation, event.patch) == ("update", ({"op": "replace", "path": "/x", "value": 2},))
