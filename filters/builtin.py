"""The built-in stages, in pipeline order: post-image, route, drop, strip or allow, patch.

Each stage is a small callable with ``__slots__``, built once per route (patterns and predicates are
compiled in ``__init__``, which raises ``InvalidRouteError`` naming the route and the bad value) and
then called once per event. Stages are pure: they return a new event or a ``Drop``. The one state
a stage may hold is the projection stages' memo (``Pipeline(memo_documents=…)``): it changes how
fast a result comes, never what it is.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

from ._events import with_documents, with_patch, with_route
from .errors import InvalidRouteError, PatchConflictError
from .patch import apply_update, diff, update_to_patch
from .paths import split_dotted, split_pattern, update_key_components
from .predicates import Predicate, first_match
from .types import ChangeEvent, Document, Drop, Route, UpdateDescription
from .visibility import (
    OPEN,
    Visibility,
    is_visible_as_is,
    project_document,
    project_documents,
    project_successor,
    project_update,
)

MAX_FLOW_ID_LENGTH: Final = 256
"""Longest accepted flow id, in characters; longer values are not ids but data."""
MAX_ORIGIN_LENGTH: Final = 128
"""Longest accepted mutation id (``Route.origin_field``); a longer value is ignored."""

_MISSING: Final[Any] = object()


class RouteStage:
    """Set ``event_type``, ``flow_id`` and ``origin``; drop the event as ``"unroutable"`` without a
    usable flow id.

    The flow id is read at ``route.flow_id_path`` from the first of these that has the path: the
    post-image, the pre-image, the update's ``updatedFields`` (the key itself or a parent of the path),
    the ``documentKey`` (``_id`` and shard-key fields), and finally the document id for ``"_id"``.

    The origin is the mutation id at ``route.origin_field`` that this very write set: for an update,
    in its ``updatedFields`` only (the post-image still holds the id of an earlier write); for an
    insert or a replacement, in the document. A string or an integer; anything else is no origin.
    """

    name: ClassVar[str] = "route"
    __slots__ = ("_components", "_event_type", "_origin_components", "_origin_path", "_path")

    def __init__(self, route: Route) -> None:
        collection = route.collection
        if not isinstance(collection, str) or not collection:
            raise InvalidRouteError(None, collection, "collection must be a non-empty string")
        if not isinstance(route.event_type, str) or not route.event_type:
            raise InvalidRouteError(collection, route.event_type, "event_type must be a non-empty string")
        try:
            self._components = split_dotted(route.flow_id_path)
        except ValueError as exc:
            raise InvalidRouteError(collection, route.flow_id_path, f"bad flow_id_path: {exc}") from None
        self._path = route.flow_id_path
        self._event_type = route.event_type
        self._origin_path = route.origin_field
        self._origin_components: tuple[str, ...] = ()
        if route.origin_field is not None:
            try:
                self._origin_components = split_dotted(route.origin_field)
            except ValueError as exc:
                raise InvalidRouteError(collection, route.origin_field, f"bad origin_field: {exc}") from None

    @property
    def event_type(self) -> str:
        return self._event_type

    def __call__(self, event: ChangeEvent) -> ChangeEvent | Drop:
        value = self._find(event)
        if type(value) is str:
            if not value:
                return Drop("unroutable", detail=f"{self._path} is empty")
            if len(value) > MAX_FLOW_ID_LENGTH:
                return Drop("unroutable", detail=f"{self._path} is longer than {MAX_FLOW_ID_LENGTH} characters")
            flow_id = value
        elif type(value) is int:
            flow_id = str(value)
        elif value is _MISSING:
            return Drop("unroutable", detail=f"{self._path} missing")
        else:
            return Drop("unroutable", detail=f"{self._path} has type {type(value).__name__}")
        origin_path = self._origin_path
        return with_route(
            event, self._event_type, flow_id, None if origin_path is None else self._origin(event, origin_path)
        )

    def _origin(self, event: ChangeEvent, path: str) -> str | None:
        if event.operation == "update":
            update = event.update_description
            value = _MISSING if update is None else _updated_value(update, path, self._origin_components)
        elif event.operation in ("insert", "replace") and event.full_document is not None:
            value = _lookup(event.full_document, self._origin_components)
        else:
            return None
        if type(value) is int:
            return str(value)
        if type(value) is str and 0 < len(value) <= MAX_ORIGIN_LENGTH:
            return value
        return None

    def _find(self, event: ChangeEvent) -> Any:
        components = self._components
        for document in (event.full_document, event.full_document_before_change):
            if document is not None:
                value = _lookup(document, components)
                if value is not _MISSING:
                    return value
        update = event.update_description
        if update is not None:
            value = _updated_value(update, self._path, components)
            if value is not _MISSING:
                return value
        document_key = event.document_key
        if document_key:
            value = document_key.get(self._path, _MISSING)
            if value is _MISSING:
                value = _lookup(document_key, components)
            if value is not _MISSING:
                return value
        if self._path == "_id":
            return event.document_id
        return _MISSING


def _updated_value(update: UpdateDescription, path: str, components: Sequence[str]) -> Any:
    """The value an update set at ``path``: the key itself, or inside the value set at a parent."""
    updated = update.updated_fields
    disambiguated = update.disambiguated_paths
    if path not in disambiguated:
        value = updated.get(path, _MISSING)
        if value is not _MISSING:
            return value
    first = components[0]
    for key, new in updated.items():
        # A key's first component is its text up to the first dot, or longer (a dotted field name
        # that disambiguatedPaths spells out): either way it cannot be ``first`` unless that text is.
        if key.partition(".")[0] != first:
            continue
        key_components = update_key_components(key, disambiguated)
        depth = len(key_components)
        if depth <= len(components) and all(
            str(part) == name for part, name in zip(key_components, components, strict=False)
        ):
            value = _lookup(new, components[depth:])
            if value is not _MISSING:
                return value
    return _MISSING


def _lookup(node: Any, components: Sequence[str]) -> Any:
    for name in components:
        if type(node) is dict or isinstance(node, Mapping):
            node = node.get(name, _MISSING)
            if node is _MISSING:
                return _MISSING
        elif isinstance(node, list) and name.isascii() and name.isdigit() and int(name) < len(node):
            node = node[int(name)]
        else:
            return _MISSING
    return node


class PostImageStage:
    """Compute the post-image of an update that has a pre-image and an update description but no post-image.

    Runs before ``drop`` and the projections, so that predicates see the document after the change
    and every projection starts from the complete documents. Leaves the event unchanged if the update
    description does not fit the pre-image.
    """

    name: ClassVar[str] = "post-image"
    __slots__ = ()

    def __call__(self, event: ChangeEvent) -> ChangeEvent | Drop:
        before = event.full_document_before_change
        update = event.update_description
        if event.operation != "update" or event.full_document is not None or before is None or update is None:
            return event
        try:
            after = apply_update(before, update)
        except PatchConflictError:
            return event
        return with_documents(event, after, before, update)


class DropStage:
    """Drop the event as ``"private"`` when the document after the change matches a ``drop_when`` predicate.

    The document is the post-image, or the pre-image for deletes. Without it the event is dropped as
    ``"unverifiable"``: a route that has predicates never publishes what it cannot check.
    """

    name: ClassVar[str] = "drop"
    __slots__ = ("_predicates",)

    def __init__(self, route: Route) -> None:
        if isinstance(route.drop_when, (str, bytes, Mapping)) or not isinstance(route.drop_when, Sequence):
            raise InvalidRouteError(route.collection, route.drop_when, "drop_when must be a sequence of predicates")
        predicates: list[Predicate] = []
        for spec in route.drop_when:
            try:
                predicates.append(Predicate(spec))
            except ValueError as exc:
                raise InvalidRouteError(route.collection, spec, f"bad drop_when predicate: {exc}") from None
        self._predicates = tuple(predicates)

    @property
    def is_noop(self) -> bool:
        """True when the route has no predicates."""
        return not self._predicates

    def __call__(self, event: ChangeEvent) -> ChangeEvent | Drop:
        if not self._predicates:
            return event
        if event.operation == "delete":
            document = event.full_document_before_change
            missing = "pre-images needed to check drop_when"
        else:
            document = event.full_document
            if event.operation == "update":
                missing = "pre-images needed to check drop_when"
            else:
                missing = "fullDocument needed to check drop_when"
        if document is None:
            return Drop("unverifiable", detail=missing)
        index = first_match(self._predicates, document)
        if index >= 0:
            return Drop("private", detail=f"drop_when[{index}]")
        return event


def _patterns(route: Route, field: str, patterns: Any) -> list[tuple[str, ...]]:
    if isinstance(patterns, (str, bytes)) or not isinstance(patterns, Sequence):
        raise InvalidRouteError(route.collection, patterns, f"{field} must be a sequence of dotted patterns")
    split: list[tuple[str, ...]] = []
    for pattern in patterns:
        try:
            split.append(split_pattern(pattern))
        except ValueError as exc:
            raise InvalidRouteError(route.collection, pattern, f"bad {field} pattern: {exc}") from None
    return split


def compile_visibility(route: Route, *, use_allow: bool) -> Visibility:
    """Compile a route's ``deny``/``deny_underscore`` rules, plus its ``allow`` list if ``use_allow``."""
    denied = route.deny if route.origin_field is None else (*route.deny, route.origin_field)
    deny = _patterns(route, "deny", denied)
    allow = _patterns(route, "allow", route.allow) if use_allow and route.allow is not None else None
    try:
        return Visibility(deny, allow, deny_underscore=bool(route.deny_underscore))
    except ValueError as exc:
        raise InvalidRouteError(route.collection, route.deny, str(exc)) from None


class _ProjectionStage:
    __slots__ = ("_memo", "_memo_size", "_root")

    def __init__(self, visibility: Visibility, *, memo_size: int = 0) -> None:
        if memo_size < 0:
            raise ValueError(f"memo_size must be >= 0, got {memo_size}")
        self._root = visibility.root
        self._memo_size = memo_size
        # id(post-image) -> (post-image, its projection), oldest first. Holding the post-image itself
        # keeps its id from being reused while the entry exists.
        self._memo: OrderedDict[int, tuple[Document, Document]] = OrderedDict()

    @property
    def is_identity(self) -> bool:
        """True when the route's rules never change anything (no deny, no allow, no ``deny_underscore``)."""
        return self._root.kind == OPEN

    def __len__(self) -> int:
        """How many post-images the memo holds."""
        return len(self._memo)

    def forget(self, document: Document) -> None:
        """Drop the remembered projection of ``document``, if any."""
        entry = self._memo.get(id(document))
        if entry is not None and entry[0] is document:
            del self._memo[id(document)]

    def __call__(self, event: ChangeEvent) -> ChangeEvent | Drop:
        root = self._root
        after = event.full_document
        before = event.full_document_before_change
        update = event.update_description
        shown_after: Document | None
        shown_before: Document | None
        if after is not None and before is not None:
            remembered = self._memo.pop(id(before), None) if self._memo_size else None
            if remembered is not None and remembered[0] is before:
                shown_before = remembered[1]
                shown_after = project_successor(after, before, shown_before, root)
            else:
                shown_after, shown_before = project_documents(after, before, root)
        else:
            shown_after = project_document(after, root) if after is not None else None
            shown_before = project_document(before, root) if before is not None else None
        if self._memo_size and after is not None and shown_after is not None and event.operation == "update":
            self._remember(after, shown_after)
        shown_update = update
        if update is not None:
            shown_update = project_update(update, root)
            if shown_update is not update and shown_update.is_empty and not update.is_empty:
                return Drop("denied-only")
        if shown_after is after and shown_before is before and shown_update is update:
            return event
        return with_documents(event, shown_after, shown_before, shown_update)

    def _remember(self, document: Document, shown: Document) -> None:
        memo = self._memo
        memo[id(document)] = (document, shown)
        memo.move_to_end(id(document))
        while len(memo) > self._memo_size:
            memo.popitem(last=False)


class StripStage(_ProjectionStage):
    """Deny-list mode: remove ``deny`` paths (and ``_``-prefixed fields) from both images and the update.

    The route's ``allow`` list, if any, is ignored (``AllowStage`` applies it). An update that touched
    nothing but removed paths is dropped as ``"denied-only"``.
    """

    name: ClassVar[str] = "strip"
    __slots__ = ()

    def __init__(self, route: Route, *, memo_size: int = 0) -> None:
        super().__init__(compile_visibility(route, use_allow=False), memo_size=memo_size)


class AllowStage(_ProjectionStage):
    """Allow-list mode: keep only ``allow`` paths, the containers leading to them and the top-level ``_id``.

    ``deny`` and ``deny_underscore`` still apply on top. An update that touched nothing visible is
    dropped as ``"denied-only"``.
    """

    name: ClassVar[str] = "allow"
    __slots__ = ()

    def __init__(self, route: Route, *, memo_size: int = 0) -> None:
        if route.allow is None:
            raise InvalidRouteError(route.collection, route.allow, "AllowStage needs an allow list")
        super().__init__(compile_visibility(route, use_allow=True), memo_size=memo_size)


class PatchStage:
    """Set ``patch`` on updates: the JSON Patch from the (projected) pre-image to the post-image.

    Other operations get ``patch=None``. With a pre-image the patch is a diff (a missing post-image is
    computed from the update description first); an empty diff drops the event as ``"denied-only"``.
    Without a pre-image the update description is translated directly, or ``patch`` stays ``None``
    when that translation cannot be exact.
    """

    name: ClassVar[str] = "patch"
    __slots__ = ("_allow_root",)

    def __init__(self, route: Route) -> None:
        self._allow_root = compile_visibility(route, use_allow=True).root if route.allow is not None else None

    def __call__(self, event: ChangeEvent) -> ChangeEvent | Drop:
        if event.operation != "update":
            return event if event.patch is None else with_patch(event, None, event.full_document)
        before = event.full_document_before_change
        after = event.full_document
        update = event.update_description
        if before is not None:
            if after is None:
                if update is None:
                    return with_patch(event, None, None)
                try:
                    after = apply_update(before, update)
                except PatchConflictError:
                    return with_patch(event, None, None)
            operations = diff(before, after)
            if not operations:
                return Drop("denied-only", detail="no visible change")
            return with_patch(event, tuple(operations), after)
        if update is None or not self._removals_are_exact(update):
            return with_patch(event, None, after)
        return with_patch(event, update_to_patch(update), after)

    def _removals_are_exact(self, update: UpdateDescription) -> bool:
        # In allow-list mode a mere ancestor of an allowed path may be absent from the client's copy
        # (its scalar value was not shown), so removing it is not a safe JSON Patch operation.
        root = self._allow_root
        if root is None:
            return True
        disambiguated = update.disambiguated_paths
        return all(is_visible_as_is(root, update_key_components(key, disambiguated)) for key in update.removed_fields)
