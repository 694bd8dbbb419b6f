"""``Pipeline``: routes change events to flows and filters them, one compiled chain per collection."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Final

from .builtin import AllowStage, DropStage, PatchStage, PostImageStage, RouteStage, StripStage
from .errors import InvalidRouteError
from .types import ChangeEvent, Document, Drop, Filter, Route, UpdateDescription

ALL_COLLECTIONS: Final = "*"
"""The ``stages`` key whose stages run for every route (before the collection's own)."""

_Builtin = Callable[[ChangeEvent], "ChangeEvent | Drop"]


def stage_name(stage: Filter) -> str:
    """Name a stage for ``Drop.detail``: its ``name`` attribute, qualified name, or type name."""
    name = getattr(stage, "name", None)
    if isinstance(name, str) and name:
        return name
    name = getattr(stage, "__qualname__", None) or getattr(stage, "__name__", None)
    return name if isinstance(name, str) else type(stage).__name__


class _Chain:
    __slots__ = ("drop", "head", "patch", "projection", "route", "routing_fields", "user")

    def __init__(
        self,
        head: tuple[_Builtin, ...],
        user: tuple[tuple[str, Filter], ...],
        patch: PatchStage,
        route: RouteStage,
        drop: DropStage | None,
        projection: AllowStage | StripStage | None,
        routing_fields: frozenset[str],
    ) -> None:
        self.head = head
        self.user = user
        self.patch = patch
        self.route = route
        self.drop = drop
        self.projection = projection
        # Top-level fields that decide the flow and the privacy of a document: an update that
        # touches none of them cannot move the document between flows.
        self.routing_fields = routing_fields

    def may_move(self, update: UpdateDescription | None) -> bool:
        """Whether an update may change the document's flow or privacy (``True`` when unsure)."""
        if update is None:
            return True
        fields = self.routing_fields
        return (
            any(key.partition(".")[0] in fields for key in update.updated_fields)
            or any(key.partition(".")[0] in fields for key in update.removed_fields)
            or any(key.partition(".")[0] in fields for key, _ in update.truncated_arrays)
        )

    def flow_before(self, event: ChangeEvent) -> str | None:
        """The flow that could see the document before the change, or ``None``."""
        before = ChangeEvent(
            collection=event.collection,
            operation="insert",
            document_id=event.document_id,
            full_document=event.full_document_before_change,
            document_key=event.document_key,
        )
        routed = self.route(before)
        if isinstance(routed, Drop):
            return None
        if self.drop is not None and isinstance(self.drop(routed), Drop):
            return None
        return routed.flow_id


class Pipeline:
    """Route and filter change events.

    Per route the stages run in this order: post-image, route, drop (if the route has ``drop_when``),
    strip or allow (unless the route changes nothing), the user ``stages`` (``"*"`` first, then the
    collection's own), patch. The first ``Drop`` ends processing.

    Every route, pattern, predicate and stage is checked here; problems raise ``InvalidRouteError``.

    With ``memo_documents``, each route remembers the projections of its latest updated post-images
    (that many at most). An update whose pre-image *is* one of them (the same object, as a caller that
    keeps documents between events passes them) then projects only the paths its update changed. The
    results are the same. ``process_all(event, remember=True)`` says that the caller keeps the update's
    post-image; a caller that later lets a kept document go calls ``forget`` so that the memo does
    not keep it alive.
    """

    __slots__ = ("_chains", "_memo_documents", "_routes")

    def __init__(
        self,
        routes: Sequence[Route],
        *,
        stages: Mapping[str, Sequence[Filter]] | None = None,
        memo_documents: int = 0,
    ) -> None:
        if type(memo_documents) is not int or memo_documents < 0:
            raise ValueError(f"memo_documents must be an integer >= 0, got {memo_documents!r}")
        self._memo_documents = memo_documents
        chains: dict[str, _Chain] = {}
        by_collection: dict[str, Route] = {}
        extra = dict(stages or {})
        for route in routes:
            if not isinstance(route, Route):
                raise InvalidRouteError(None, route, "routes must be Route instances")
            if route.collection in by_collection:
                raise InvalidRouteError(route.collection, route.collection, "duplicate route for collection")
            by_collection[route.collection] = route
        for key in extra:
            if key != ALL_COLLECTIONS and key not in by_collection:
                raise InvalidRouteError(key, key, "stages given for a collection without a route")
        shared = _user_stages(ALL_COLLECTIONS, extra.get(ALL_COLLECTIONS, ()))
        for collection, route in by_collection.items():
            route_stage = RouteStage(route)
            # The post-image first: an update that changes the flow id is routed by its new value.
            head: list[_Builtin] = [PostImageStage(), route_stage]
            drop_stage = DropStage(route)
            drop = None if drop_stage.is_noop else drop_stage
            if drop is not None:
                head.append(drop)
            projection: AllowStage | StripStage = (
                AllowStage(route, memo_size=memo_documents)
                if route.allow is not None
                else StripStage(route, memo_size=memo_documents)
            )
            if not projection.is_identity:
                head.append(projection)
            own = _user_stages(collection, extra.get(collection, ()))
            chains[collection] = _Chain(
                tuple(head),
                shared + own,
                PatchStage(route),
                route_stage,
                drop,
                None if projection.is_identity else projection,
                frozenset(
                    path.partition(".")[0]
                    for path in (route.flow_id_path, *(key for spec in route.drop_when for key in spec))
                ),
            )
        self._chains = chains
        self._routes = MappingProxyType(by_collection)

    @property
    def memo_documents(self) -> int:
        """How many post-images each route may remember (0: no memo)."""
        return self._memo_documents

    @property
    def remembered(self) -> int:
        """How many post-images the memo holds now, over all routes."""
        return sum(len(chain.projection) for chain in self._chains.values() if chain.projection is not None)

    @property
    def routes(self) -> Mapping[str, Route]:
        """The routes by collection name (read-only)."""
        return self._routes

    @property
    def collections(self) -> tuple[str, ...]:
        """The routed collection names, in the order the routes were given."""
        return tuple(self._routes)

    def forget(self, collection: str, document: Document) -> None:
        """Drop what the memo holds for ``document`` of ``collection``, if anything."""
        chain = self._chains.get(collection)
        if chain is not None and chain.projection is not None:
            chain.projection.forget(document)

    def process(self, event: ChangeEvent) -> ChangeEvent | Drop:
        """Run ``event`` through its collection's stages; never raises because of a user stage."""
        chain = self._chains.get(event.collection)
        if chain is None:
            return Drop("no-route", detail=f"no route for collection {event.collection!r}")
        for builtin in chain.head:
            result = builtin(event)
            if isinstance(result, Drop):
                return result
            event = result
        for name, stage in chain.user:
            try:
                outcome: object = stage(event)
            except Exception as exc:
                return Drop("stage-error", detail=f"{name} raised {type(exc).__name__}")
            if isinstance(outcome, Drop):
                return outcome
            if not isinstance(outcome, ChangeEvent):
                return Drop("stage", detail=name)
            event = outcome
        return chain.patch(event)

    def process_all(self, event: ChangeEvent, *, remember: bool = False) -> tuple[ChangeEvent, ...] | Drop:
        """``process``, plus moves between flows for updates and replacements with a pre-image.

        A document that leaves a flow (its flow id changed, or it now matches ``drop_when``) gives
        that flow a ``delete``; a document that enters a flow gives it an ``insert`` with the filtered
        document. The private state itself is never published.

        With a memo, an update's pre-image is forgotten once processed (its successor replaces it),
        and its post-image is remembered only when ``remember`` is true: the caller keeps that very
        object and passes it as the pre-image of the document's next update.
        """
        result = self._process_all(event)
        if self._memo_documents and event.operation == "update":
            before, after = event.full_document_before_change, event.full_document
            if before is not None and before is not after:
                self.forget(event.collection, before)
            if after is not None and not remember:
                self.forget(event.collection, after)
        return result

    def _process_all(self, event: ChangeEvent) -> tuple[ChangeEvent, ...] | Drop:
        result = self.process(event)
        if event.operation not in ("update", "replace") or event.full_document_before_change is None:
            return result if isinstance(result, Drop) else (result,)
        chain = self._chains.get(event.collection)
        if chain is None:
            return result if isinstance(result, Drop) else (result,)
        update = event.update_description
        if isinstance(result, ChangeEvent) and event.operation == "update" and not chain.may_move(update):
            return (result,)
        flow_before = chain.flow_before(event)
        if isinstance(result, Drop):
            if result.reason == "denied-only" or flow_before is None:
                return result
            return (_moved_out(event, chain, flow_before),)
        if flow_before == result.flow_id:
            return (result,)
        moved_in = _moved_in(result)
        return (moved_in,) if flow_before is None else (_moved_out(event, chain, flow_before), moved_in)


def _moved_out(event: ChangeEvent, chain: _Chain, flow_id: str) -> ChangeEvent:
    return ChangeEvent(
        collection=event.collection,
        operation="delete",
        document_id=event.document_id,
        cluster_time=event.cluster_time,
        wall_time=event.wall_time,
        document_key=event.document_key,
        event_type=chain.route.event_type,
        flow_id=flow_id,
    )


def _moved_in(event: ChangeEvent) -> ChangeEvent:
    return ChangeEvent(
        collection=event.collection,
        operation="insert",
        document_id=event.document_id,
        full_document=event.full_document,
        cluster_time=event.cluster_time,
        wall_time=event.wall_time,
        document_key=event.document_key,
        event_type=event.event_type,
        flow_id=event.flow_id,
    )


def _user_stages(collection: str, stages: Sequence[Filter]) -> tuple[tuple[str, Filter], ...]:
    if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence):
        raise InvalidRouteError(collection, stages, "stages must be a sequence of callables")
    named: list[tuple[str, Filter]] = []
    for stage in stages:
        if not callable(stage):
            raise InvalidRouteError(collection, stage, "a stage must be callable")
        named.append((stage_name(stage), stage))
    return tuple(named)
