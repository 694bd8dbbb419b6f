"""Which parts of a document a route lets through, and the projections that enforce it.

Deny and allow patterns are compiled once per route into a small deterministic automaton: each
``State`` stands for "the set of pattern positions reached so far", with precomputed transitions for
the field names and array indices the patterns mention plus one default transition for all others.
Projecting a document is then one dictionary lookup per field, with no per-event pattern matching.

Array elements are never removed from an array, because that would shift the positions that update
descriptions and patches refer to: a hidden element (or a scalar element with nothing allowed in it)
is replaced by ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import compress
from operator import is_, is_not
from typing import Any, Final

from .paths import WILDCARD, is_array_index, update_key_components
from .types import Document, PathComponent, UpdateDescription

HIDDEN: Final = 0
"""State kind: the value and everything under it are removed."""
PARTIAL: Final = 1
"""State kind: parts of the value may be removed; walk into it."""
OPEN: Final = 2
"""State kind: the value and everything under it pass unchanged."""

MAX_STATES: Final = 10_000
"""Upper bound on compiled states; only pathological pattern sets come near it."""

ABSENT: Final[Any] = object()
"""Returned by ``project_value`` when nothing of a value may be shown."""

_SCALAR_TYPES: Final = frozenset({str, int, float, bool, type(None)})
"""JSON scalars; any other non-container value goes through the slower, more general path."""

_Positions = frozenset[tuple[int, int]]
_Key = tuple[bool, _Positions, bool, _Positions]


class State:
    """One node of the compiled automaton; see the module docstring."""

    __slots__ = (
        "hides_underscore",
        "indices",
        "keeps_scalars",
        "kind",
        "names",
        "other_index",
        "other_name",
        "products",
        "strips_only",
    )

    def __init__(self, kind: int, *, keeps_scalars: bool, hides_underscore: bool) -> None:
        self.kind = kind
        self.keeps_scalars = keeps_scalars
        self.hides_underscore = hides_underscore
        self.names: dict[str, State] = {}
        self.indices: dict[int, State] = {}
        self.other_name: State = self
        self.other_index: State = self
        self.strips_only = False
        """True for the state below which nothing but ``_``-prefixed names is hidden."""
        self.products: dict[State, State] | None = None
        """``intersect(self, other)`` by ``other``, built when first needed."""


_HIDDEN_STATE: Final = State(HIDDEN, keeps_scalars=False, hides_underscore=False)
_OPEN_STATE: Final = State(OPEN, keeps_scalars=True, hides_underscore=False)


class Visibility:
    """The compiled deny/allow rules of one route.

    ``deny`` and ``allow`` are already split patterns (see ``paths.split_pattern``); ``allow=None``
    means deny-list mode. Raises ``ValueError`` if the patterns need more than ``MAX_STATES`` states.
    """

    __slots__ = ("_allow", "_deny", "_deny_underscore", "_memo", "_pending", "root")

    def __init__(
        self,
        deny: Sequence[tuple[str, ...]] = (),
        allow: Sequence[tuple[str, ...]] | None = None,
        *,
        deny_underscore: bool = False,
    ) -> None:
        self._deny = tuple(deny)
        self._allow = tuple(allow) if allow is not None else ()
        self._deny_underscore = deny_underscore
        self._memo: dict[_Key, State] = {}
        self._pending: list[tuple[_Key, State]] = []
        start_deny = frozenset((index, 0) for index in range(len(self._deny)))
        start_allow = frozenset((index, 0) for index in range(len(self._allow)))
        self.root = self._state((True, start_deny, allow is None, start_allow))
        while self._pending:
            key, state = self._pending.pop()
            self._link(key, state)
        del self._memo, self._pending

    @property
    def is_identity(self) -> bool:
        """True when the rules never change a document."""
        return self.root.kind == OPEN

    def _state(self, key: _Key) -> State:
        is_root, deny_positions, allow_done, allow_positions = key
        if any(position == len(self._deny[index]) for index, position in deny_positions):
            return _HIDDEN_STATE
        if any(position == len(self._allow[index]) for index, position in allow_positions):
            allow_done, allow_positions = True, frozenset()
        if not allow_done and not allow_positions and not is_root:
            return _HIDDEN_STATE
        if not deny_positions and allow_done and not self._deny_underscore:
            return _OPEN_STATE
        key = (is_root, deny_positions, allow_done, allow_positions)
        state = self._memo.get(key)
        if state is None:
            if len(self._memo) >= MAX_STATES:
                raise ValueError(f"the patterns need more than {MAX_STATES} automaton states")
            state = State(PARTIAL, keeps_scalars=allow_done, hides_underscore=self._deny_underscore)
            state.strips_only = not is_root and not deny_positions and allow_done
            self._memo[key] = state
            self._pending.append((key, state))
        return state

    def _link(self, key: _Key, state: State) -> None:
        is_root, deny_positions, _, allow_positions = key
        literals = {self._deny[index][position] for index, position in deny_positions}
        literals.update(self._allow[index][position] for index, position in allow_positions)
        literals.discard(WILDCARD)
        for literal in sorted(literals):
            if self._deny_underscore and literal.startswith("_") and not (is_root and literal == "_id"):
                state.names[literal] = _HIDDEN_STATE
            else:
                state.names[literal] = self._state(self._step(key, literal, None))
            if is_array_index(literal):
                state.indices[int(literal)] = self._state(self._step(key, None, literal))
        if is_root:
            _, deny_after_id, _, _ = self._step(key, "_id", None)
            state.names["_id"] = self._state((False, deny_after_id, True, frozenset()))
        state.other_name = self._state(self._step(key, "", None))
        state.other_index = self._state(self._step(key, None, ""))

    def _step(self, key: _Key, name: str | None, index: str | None) -> _Key:
        """Advance every position over one field name (``name``) or one array index (``index``).

        An empty string stands for a name or index that no pattern mentions.
        """
        _, deny_positions, allow_done, allow_positions = key
        return (
            False,
            _advance(self._deny, deny_positions, name, index),
            allow_done,
            _advance(self._allow, allow_positions, name, index),
        )


def _advance(
    patterns: tuple[tuple[str, ...], ...], positions: _Positions, name: str | None, index: str | None
) -> _Positions:
    reached: set[tuple[int, int]] = set()
    for pattern_index, position in positions:
        part = patterns[pattern_index][position]
        if part == WILDCARD:
            reached.add((pattern_index, position + 1))
        elif name is not None:
            if part == name:
                reached.add((pattern_index, position + 1))
        else:
            if part == index:
                reached.add((pattern_index, position + 1))
            # Array indices are transparent to named components, as in MongoDB queries.
            reached.add((pattern_index, position))
    return frozenset(reached)


def step(state: State, component: PathComponent) -> State:
    """Follow one path component."""
    if type(component) is str:
        following = state.names.get(component)
        if following is None:
            if "." in component:
                return _dotted(state, component)
            if state.hides_underscore and component[:1] == "_":
                return _HIDDEN_STATE
            return state.other_name
        return following
    return state.indices.get(component, state.other_index)  # type: ignore[arg-type]


def _dotted(state: State, name: str) -> State:
    """A field name with dots is judged both as itself and as the path it spells, so that a literal
    ``"secrets.key"`` cannot slip past a rule for ``secrets`` (nor ``{"a.b": {"c": …}}`` past one for
    ``a.b.c``): its content is shown only as far as both readings show it."""
    literal = state.names.get(name)
    if literal is None:
        literal = _HIDDEN_STATE if state.hides_underscore and name[:1] == "_" else state.other_name
    spelled = state
    for part in name.split("."):
        if spelled.kind != PARTIAL:
            break
        spelled = step(spelled, part)
    return intersect(literal, spelled)


def intersect(first: State, second: State) -> State:
    """The state that shows a value only as far as both ``first`` and ``second`` show it.

    Built on first use and remembered on ``first``; the states reachable from a pair are pairs of
    states of the same automaton, so there are finitely many.
    """
    if first is second or second.kind == OPEN or first.kind == HIDDEN:
        return first
    if first.kind == OPEN or second.kind == HIDDEN:
        return second
    if first.products is None:
        first.products = {}
    both = first.products.get(second)
    if both is not None:
        return both
    both = State(
        PARTIAL,
        keeps_scalars=first.keeps_scalars and second.keeps_scalars,
        hides_underscore=first.hides_underscore or second.hides_underscore,
    )
    both.strips_only = first.strips_only and second.strips_only
    first.products[second] = both  # before the transitions: they may lead back to this pair
    for name in first.names.keys() | second.names.keys():
        both.names[name] = intersect(step(first, name), step(second, name))
    for index in first.indices.keys() | second.indices.keys():
        both.indices[index] = intersect(
            first.indices.get(index, first.other_index), second.indices.get(index, second.other_index)
        )
    both.other_name = intersect(first.other_name, second.other_name)
    both.other_index = intersect(first.other_index, second.other_index)
    return both


def descend(state: State, components: Sequence[PathComponent]) -> tuple[State, int]:
    """Follow components until the end or a HIDDEN/OPEN state; return it and how many were followed."""
    followed = 0
    for component in components:
        if state.kind != PARTIAL:
            break
        state = step(state, component)
        followed += 1
    return state, followed


def project_value(value: Any, state: State) -> Any:
    """Return what of ``value`` may be shown at ``state``, or ``ABSENT``."""
    kind = state.kind
    if kind == OPEN:
        return value
    if kind == HIDDEN:
        return ABSENT
    kind_of_value = type(value)
    if kind_of_value is dict:
        return _project_dict(value, state)
    if kind_of_value is list:
        return _project_list(value, state)
    if kind_of_value in _SCALAR_TYPES:
        return value if state.keeps_scalars else ABSENT
    return _project_unusual(value, state)


def project_document(document: Document, root: State) -> Document:
    """Return the visible part of a whole document; the input is returned as is when nothing is removed."""
    if root.kind == OPEN:
        return document
    if type(document) is dict:
        return _project_dict(document, root)
    shown = _project_unusual(document, root)
    return shown if isinstance(shown, dict) else {}


def project_documents(after: Document, before: Document, root: State) -> tuple[Document, Document]:
    """Project a post-image and a pre-image, reusing the post-image's projection where they are equal.

    Besides saving most of the second walk, this makes the two projections share unchanged subtrees,
    which lets ``patch.diff`` skip them by identity. Equality is Python's ``==`` with matching types at
    each compared level, so the pre-image's projection may take the post-image's ``True`` for a ``1``
    deep inside an otherwise equal subtree; the post-image's projection is always exact.
    """
    shown_after = project_document(after, root)
    if root.kind == OPEN or type(after) is not dict or type(before) is not dict or type(shown_after) is not dict:
        return shown_after, project_document(before, root)
    return shown_after, _share_dict(before, root, after, shown_after, exact=False)


def project_successor(after: Document, before: Document, shown_before: Document, root: State) -> Document:
    """Project a post-image built from ``before`` by copy-on-write, given ``before``'s projection.

    Every subtree of ``after`` that *is* (the same object as) the subtree of ``before`` at the same
    place keeps its projection from ``shown_before``: only the changed paths are walked. The result
    is exactly ``project_document(after, root)``, provided ``shown_before`` is that of ``before`` and
    neither document was mutated since.
    """
    if root.kind == OPEN or type(after) is not dict or type(before) is not dict or type(shown_before) is not dict:
        return project_document(after, root)
    return _share_dict(after, root, before, shown_before, exact=True)


def _share_dict(
    document: dict[str, Any], state: State, reference: dict[str, Any], reference_shown: dict[str, Any], *, exact: bool
) -> dict[str, Any]:
    if exact and len(document) == len(reference) and all(map(is_, document, reference)):
        shared = _succeed_dict(document, state, reference, reference_shown)
        if shared is not None:
            return shared
    names = state.names
    other = state.other_name
    hides_underscore = state.hides_underscore
    projected: dict[str, Any] = {}
    for name, value in document.items():
        old = reference.get(name, ABSENT)
        # ``exact``: reuse by identity only, as ``==`` would take a nested ``1`` for ``True``.
        if old is value or (not exact and type(old) is type(value) and old == value):
            shown = reference_shown.get(name, ABSENT)
        else:
            following = names.get(name)
            if following is None:
                if "." in name:
                    following = _dotted(state, name)
                else:
                    following = _HIDDEN_STATE if hides_underscore and name[:1] == "_" else other
            shown = _share_value(value, following, old, reference_shown.get(name, ABSENT), exact)
        if shown is not ABSENT:
            projected[name] = shown
    return projected


def _share_list(
    array: list[Any], state: State, reference: list[Any], reference_shown: list[Any], *, exact: bool
) -> list[Any]:
    if exact and len(array) == len(reference) == len(reference_shown):
        return _succeed_list(array, state, reference, reference_shown)
    indices = state.indices
    other = state.other_index
    common = min(len(reference), len(reference_shown))
    projected: list[Any] = []
    for position, value in enumerate(array):
        if position < common:
            old = reference[position]
            if old is value or (not exact and type(old) is type(value) and old == value):
                projected.append(reference_shown[position])
                continue
            old_shown = reference_shown[position]
        else:
            old = old_shown = ABSENT
        following = indices.get(position, other) if indices else other
        shown = _share_value(value, following, old, old_shown, exact)
        projected.append(None if shown is ABSENT else shown)
    return projected


def _succeed_dict(
    document: dict[str, Any], state: State, reference: dict[str, Any], reference_shown: dict[str, Any]
) -> dict[str, Any] | None:
    """``_share_dict`` by identity when ``document`` has the names of ``reference`` in the same order.

    The members that are not the very objects of ``reference`` are found in one C-level pass and
    projected again; the others keep their projections. ``None`` when a member that was hidden shows
    now: it would have to be inserted in the middle, so the caller walks the whole level.
    """
    changed = list(compress(document, map(is_not, document.values(), reference.values())))
    if not changed:
        return reference_shown
    projected = dict(reference_shown)
    for name in changed:
        old_shown = reference_shown.get(name, ABSENT)
        shown = _share_value(document[name], step(state, name), reference[name], old_shown, True)
        if shown is ABSENT:
            if old_shown is not ABSENT:
                del projected[name]
        elif old_shown is ABSENT:
            return None
        else:
            projected[name] = shown
    return projected


def _succeed_list(array: list[Any], state: State, reference: list[Any], reference_shown: list[Any]) -> list[Any]:
    """``_share_list`` by identity for arrays of the same length (elements keep their positions)."""
    changed = list(compress(range(len(array)), map(is_not, array, reference)))
    if not changed:
        return reference_shown
    projected = list(reference_shown)
    indices = state.indices
    other = state.other_index
    for position in changed:
        following = indices.get(position, other) if indices else other
        shown = _share_value(array[position], following, reference[position], reference_shown[position], True)
        projected[position] = None if shown is ABSENT else shown
    return projected


def _share_value(value: Any, state: State, old: Any, old_shown: Any, exact: bool) -> Any:
    if state.kind == PARTIAL:
        kind_of_value = type(value)
        if kind_of_value is dict and type(old) is dict and type(old_shown) is dict:
            return _share_dict(value, state, old, old_shown, exact=exact)
        if kind_of_value is list and type(old) is list and type(old_shown) is list:
            return _share_list(value, state, old, old_shown, exact=exact)
    return project_value(value, state)


def _project_unusual(value: Any, state: State) -> Any:
    # Documents should hold plain JSON values only; mapping and sequence subclasses (bson.SON, tuples)
    # are projected as dicts and lists rather than passed through whole as if they were scalars.
    if isinstance(value, Mapping):
        return _project_dict(dict(value), state)
    if isinstance(value, (list, tuple)):
        return _project_list(list(value), state)
    return value if state.keeps_scalars else ABSENT


def _project_dict(document: dict[str, Any], state: State) -> dict[str, Any]:
    if state.strips_only:
        return _strip_dict(document, state)
    names = state.names
    other = state.other_name
    hides_underscore = state.hides_underscore
    # Copy on write: most containers lose nothing and are returned as they are.
    projected: dict[str, Any] | None = None
    for name, value in document.items():
        following = names.get(name)
        if following is None:
            if "." in name:
                following = _dotted(state, name)
            else:
                following = _HIDDEN_STATE if hides_underscore and name[:1] == "_" else other
        if following is _OPEN_STATE:
            continue
        shown: Any
        if following is _HIDDEN_STATE:
            shown = ABSENT
        else:
            kind_of_value = type(value)
            if kind_of_value is dict:
                shown = _strip_dict(value, following) if following.strips_only else _project_dict(value, following)
            elif kind_of_value is list:
                shown = _project_list(value, following)
            elif kind_of_value in _SCALAR_TYPES:
                if following.keeps_scalars:
                    continue
                shown = ABSENT
            else:
                shown = _project_unusual(value, following)
        if shown is not value:
            if projected is None:
                projected = dict(document)
            if shown is ABSENT:
                del projected[name]
            else:
                projected[name] = shown
    return document if projected is None else projected


def _project_list(array: list[Any], state: State) -> list[Any]:
    if state.strips_only:
        return _strip_list(array, state)
    indices = state.indices
    other = state.other_index
    projected: list[Any] | None = None
    for position, value in enumerate(array):
        following = indices.get(position, other) if indices else other
        if following is _OPEN_STATE:
            continue
        shown: Any
        if following is _HIDDEN_STATE:
            shown = None
        else:
            kind_of_value = type(value)
            if kind_of_value is dict:
                shown = _strip_dict(value, following) if following.strips_only else _project_dict(value, following)
            elif kind_of_value is list:
                shown = _project_list(value, following)
            elif kind_of_value in _SCALAR_TYPES:
                if following.keeps_scalars:
                    continue
                shown = None
            else:
                shown = _project_unusual(value, following)
                if shown is ABSENT:
                    shown = None
        if shown is not value:
            if projected is None:
                projected = list(array)
            projected[position] = shown
    return array if projected is None else projected


def _strip_dict(document: dict[str, Any], state: State) -> dict[str, Any]:
    """``_project_dict`` for the common state where only ``_``-prefixed names are hidden, at any depth."""
    projected: dict[str, Any] | None = None
    for name, value in document.items():
        shown: Any
        if name[:1] == "_" or "._" in name:
            shown = ABSENT
        else:
            kind_of_value = type(value)
            if kind_of_value is dict:
                shown = _strip_dict(value, state)
            elif kind_of_value is list:
                shown = _strip_list(value, state)
            elif kind_of_value in _SCALAR_TYPES:
                continue
            else:
                shown = _project_unusual(value, state)
        if shown is not value:
            if projected is None:
                projected = dict(document)
            if shown is ABSENT:
                del projected[name]
            else:
                projected[name] = shown
    return document if projected is None else projected


def _strip_list(array: list[Any], state: State) -> list[Any]:
    projected: list[Any] | None = None
    for position, value in enumerate(array):
        kind_of_value = type(value)
        shown: Any
        if kind_of_value is dict:
            shown = _strip_dict(value, state)
        elif kind_of_value is list:
            shown = _strip_list(value, state)
        elif kind_of_value in _SCALAR_TYPES:
            continue
        else:
            shown = _project_unusual(value, state)
            if shown is ABSENT:
                shown = None
        if shown is not value:
            if projected is None:
                projected = list(array)
            projected[position] = shown
    return array if projected is None else projected


def project_update(update: UpdateDescription, root: State) -> UpdateDescription:
    """Return the visible part of an update description, consistent with ``project_document``.

    - A key on or under a hidden path is removed, except that a key naming a hidden array element is
      kept with the ``None`` placeholder the projected documents show there.
    - A key above a hidden (or allowed) path keeps the visible part of its value; if nothing of a
      scalar value may be shown, the key becomes a removed field (or a ``None`` placeholder when it
      names an array element), because the visible document no longer has it.
    - Hidden ``removedFields`` and ``truncatedArrays`` entries are removed, and so are
      ``disambiguatedPaths`` entries of keys that are gone.
    """
    if root.kind == OPEN:
        return update
    disambiguated = update.disambiguated_paths
    updated: dict[str, Any] = {}
    removed: list[str] = []
    became_removed: list[str] = []
    changed = False
    for key, value in update.updated_fields.items():
        components = update_key_components(key, disambiguated)
        state, followed = descend(root, components)
        if state.kind == HIDDEN:
            changed = True
            if followed == len(components) and type(components[-1]) is int:
                updated[key] = None
            continue
        shown = project_value(value, state)
        if shown is ABSENT:
            changed = True
            if type(components[-1]) is int:
                updated[key] = None
            else:
                became_removed.append(key)
            continue
        if shown is not value:
            changed = True
        updated[key] = shown
    for key in update.removed_fields:
        if descend(root, update_key_components(key, disambiguated))[0].kind == HIDDEN:
            changed = True
        else:
            removed.append(key)
    truncated: list[tuple[str, int]] = []
    for entry in update.truncated_arrays:
        if descend(root, update_key_components(entry[0], disambiguated))[0].kind == HIDDEN:
            changed = True
        else:
            truncated.append(entry)
    if not changed:
        return update
    removed.extend(key for key in became_removed if key not in removed)
    kept = {*updated, *removed, *(field for field, _ in truncated)}
    return UpdateDescription(
        updated_fields=updated,
        removed_fields=tuple(removed),
        truncated_arrays=tuple(truncated),
        disambiguated_paths={key: path for key, path in disambiguated.items() if key in kept},
    )


def is_visible_as_is(root: State, components: Sequence[PathComponent]) -> bool:
    """Tell whether a path, when present, is shown with all its visible content (not just as a container).

    In deny-list mode that is every path that is not hidden; in allow-list mode only allowed paths,
    not the mere ancestors of allowed paths.
    """
    state = descend(root, components)[0]
    return state.kind != HIDDEN and state.keeps_scalars
