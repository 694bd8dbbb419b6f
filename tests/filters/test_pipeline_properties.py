"""Property tests: random documents, MongoDB-style updates and patterns against a reference model.

The reference here is written from the rules, not from the implementation: a path is hidden when a
deny pattern matches a prefix of it (``*`` = one component, array indices skippable by named
components) or a non-top-level-``_id`` name on it starts with ``_``; in allow-list mode it must also
be allowed (a prefix matches an allow pattern) or lead to an allowed path. A literal field name
with dots is read both as itself and as the path it spells, and a path must pass under every
reading. Hidden members disappear, hidden array elements become ``None``.
"""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

import jsonpatch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from filters import (
    ChangeEvent,
    Drop,
    Pipeline,
    Route,
    UpdateDescription,
    apply_patch,
    apply_update,
    builtin,
    diff,
    visibility,
)

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NAMES = ["a", "b", "_x", "secret", "a.b", "$k", "0", "1", "s/l", "t~"]
PATTERN_PARTS = ["a", "b", "_x", "secret", "$k", "0", "1", "*", "s/l", "t~"]
ABSENT: Any = object()

scalars = st.none() | st.booleans() | st.integers(-2, 2) | st.sampled_from([0.5, -1.0]) | st.text("ab_", max_size=2)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(NAMES), children, max_size=3),
    max_leaves=10,
)
documents = st.dictionaries(st.sampled_from(NAMES), values, max_size=4).map(lambda fields: {"_id": 1, **fields})
patterns = st.lists(st.lists(st.sampled_from(PATTERN_PARTS), min_size=1, max_size=3).map(".".join), max_size=3).map(
    tuple
)


def canonical(value: Any) -> str:
    """Strict JSON identity: ``True`` differs from ``1`` and ``1`` from ``1.0``; member order does not matter."""
    return json.dumps(value, sort_keys=True)


# --- reference rules -------------------------------------------------------------------------------


def _prefix_matches(pattern: list[str], path: tuple[Any, ...]) -> bool:
    def match(position: int, depth: int) -> bool:
        if position == len(pattern):
            return True
        if depth == len(path):
            return False
        part, component = pattern[position], path[depth]
        if part == "*":
            return match(position + 1, depth + 1)
        if isinstance(component, int):
            return (part == str(component) and match(position + 1, depth + 1)) or match(position, depth + 1)
        return part == component and match(position + 1, depth + 1)

    return match(0, 0)


def _leads_to(pattern: list[str], path: tuple[Any, ...]) -> bool:
    """Some extension of ``path`` could match ``pattern``."""

    def match(position: int, depth: int) -> bool:
        if position == len(pattern):
            return True
        if depth == len(path):
            return True
        part, component = pattern[position], path[depth]
        if part == "*":
            return match(position + 1, depth + 1)
        if isinstance(component, int):
            return (part == str(component) and match(position + 1, depth + 1)) or match(position, depth + 1)
        return part == component and match(position + 1, depth + 1)

    return match(0, 0)


def readings(path: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Every way to read ``path``: each literal field name with dots as itself or as the path it spells."""
    found: list[tuple[Any, ...]] = [()]
    for part in path:
        options = [(part,)]
        if isinstance(part, str) and "." in part:
            options.append(tuple(part.split(".")))
        found = [reading + option for reading in found for option in options]
    return found


class Rules:
    def __init__(self, deny: tuple[str, ...], allow: tuple[str, ...] | None, underscore: bool) -> None:
        self.deny = [pattern.split(".") for pattern in deny]
        self.allow = [pattern.split(".") for pattern in allow] if allow is not None else None
        self.underscore = underscore
        self.route = Route("c", "t", flow_id_path="_id", deny=deny, allow=allow, deny_underscore=underscore)

    def denied(self, path: tuple[Any, ...]) -> bool:
        return any(self._denied(reading) for reading in readings(path))

    def _denied(self, path: tuple[Any, ...]) -> bool:
        if self.underscore and any(
            isinstance(part, str) and part.startswith("_") and not (depth == 0 and part == "_id")
            for depth, part in enumerate(path)
        ):
            return True
        return any(_prefix_matches(pattern, path) for pattern in self.deny)

    def allowed(self, path: tuple[Any, ...]) -> bool:
        return self.allow is None or path[:1] == ("_id",) or any(_prefix_matches(p, path) for p in self.allow)

    def leads_to_allowed(self, path: tuple[Any, ...]) -> bool:
        return self.allow is None or any(_leads_to(pattern, path) for pattern in self.allow)

    def hidden(self, path: tuple[Any, ...], value: Any) -> bool:
        """Hidden under some reading: denied, or neither allowed nor (for a container) on the way to
        something allowed."""
        return any(
            self._denied(reading)
            or (not self.allowed(reading) and not (self.leads_to_allowed(reading) and isinstance(value, dict | list)))
            for reading in readings(path)
        )

    def project(self, value: Any, path: tuple[Any, ...] = ()) -> Any:
        if path and self.hidden(path, value):
            return ABSENT
        if isinstance(value, dict):
            shown = {name: self.project(item, (*path, name)) for name, item in value.items()}
            return {name: item for name, item in shown.items() if item is not ABSENT}
        if isinstance(value, list):
            return [
                None if (item := self.project(element, (*path, index))) is ABSENT else item
                for index, element in enumerate(value)
            ]
        return value

    def check_value_at(self, path: tuple[Any, ...], value: Any) -> None:
        """``value`` shown at ``path`` reveals nothing hidden (a hidden array element may be ``None``)."""
        shown = self.project(value, path)
        if shown is ABSENT:
            assert value is None and isinstance(path[-1], int), path
        else:
            assert canonical(shown) == canonical(value), path


# --- reference MongoDB updates -----------------------------------------------------------------------


def _containers(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path] if isinstance(value, dict | list) else []
    if isinstance(value, dict):
        for name, item in value.items():
            found += _containers(item, (*path, name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _containers(item, (*path, index))
    return found


def _at(document: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        document = document[part]
    return document


def mutate(document: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """Apply random $set, $unset, $push, $pull and truncations to a deep copy."""
    document = json.loads(json.dumps(document))
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _containers(document)
        arrays = [path for path in paths if isinstance(_at(document, path), list)]
        prefer_arrays = bool(arrays) and data.draw(st.booleans())
        path = data.draw(st.sampled_from(arrays if prefer_arrays else paths))
        container = _at(document, path)
        if isinstance(container, dict):
            names = [name for name in container if path or name != "_id"]
            if bool(names) and data.draw(st.booleans()):
                del container[data.draw(st.sampled_from(names))]
            else:
                name = data.draw(st.sampled_from(NAMES))
                container[name] = data.draw(values)
        else:
            action = data.draw(st.sampled_from(["push", "pull", "set", "truncate"]))
            if action == "push" or not container:
                container.extend(data.draw(st.lists(values, min_size=1, max_size=2)))
            elif action == "pull":
                del container[data.draw(st.integers(0, len(container) - 1))]
            elif action == "set":
                container[data.draw(st.integers(0, len(container) - 1))] = data.draw(values)
            else:
                del container[data.draw(st.integers(0, len(container) - 1)) :]
    return document


def _is_index(part: str) -> bool:
    return part.isdigit() and (part == "0" or part[0] != "0")


def describe(before: dict[str, Any], after: dict[str, Any], data: st.DataObject) -> UpdateDescription:
    """An updateDescription the server could emit for ``before`` -> ``after`` (it may pick any granularity)."""
    updated: dict[tuple[Any, ...], Any] = {}
    removed: list[tuple[Any, ...]] = []
    truncated: list[tuple[tuple[Any, ...], int]] = []

    def change(old: Any, new: Any, path: tuple[Any, ...]) -> None:
        if canonical(old) == canonical(new):
            return
        if isinstance(old, dict) and isinstance(new, dict) and data.draw(st.booleans()):
            members(old, new, path)
        elif isinstance(old, list) and isinstance(new, list) and data.draw(st.booleans()):
            if len(new) < len(old):
                truncated.append((path, len(new)))
            for index in range(min(len(old), len(new))):
                change(old[index], new[index], (*path, index))
            for index in range(len(old), len(new)):
                updated[(*path, index)] = new[index]
        else:
            updated[path] = new

    def members(old: dict[str, Any], new: dict[str, Any], path: tuple[Any, ...]) -> None:
        removed.extend((*path, name) for name in old if name not in new)
        for name, item in new.items():
            if name in old:
                change(old[name], item, (*path, name))
            else:
                updated[(*path, name)] = item

    members(before, after, ())

    def key(path: tuple[Any, ...]) -> str:
        return ".".join(str(part) for part in path)

    keys = [key(path) for path in [*updated, *removed, *(path for path, _ in truncated)]]
    if len(keys) != len(set(keys)):
        # Two paths spell the same dotted key ("a.b" vs a -> b): report their top-level fields whole.
        clashing = {key(path) for path in [*updated, *removed] if keys.count(key(path)) > 1}
        clashing |= {key(path) for path, _ in truncated if keys.count(key(path)) > 1}
        tops = {path[0] for path in [*updated, *removed, *(p for p, _ in truncated)] if key(path) in clashing}
        updated = {path: value for path, value in updated.items() if path[0] not in tops}
        removed = [path for path in removed if path[0] not in tops]
        truncated = [entry for entry in truncated if entry[0][0] not in tops]
        for top in tops:
            if top in after:
                updated[(top,)] = after[top]
            else:
                removed.append((top,))
    disambiguated = {
        key(path): tuple(path)
        for path in [*updated, *removed, *(p for p, _ in truncated)]
        if any(
            isinstance(part, str) and ("." in part or (depth > 0 and _is_index(part)))
            for depth, part in enumerate(path)
        )
    }
    return UpdateDescription(
        updated_fields={key(path): value for path, value in updated.items()},
        removed_fields=tuple(key(path) for path in removed),
        truncated_arrays=tuple((key(path), size) for path, size in truncated),
        disambiguated_paths=disambiguated,
    )


def components(key: str, disambiguated: Any) -> tuple[Any, ...]:
    if key in disambiguated:
        return tuple(disambiguated[key])
    head, *rest = key.split(".")
    return (head, *(int(part) if _is_index(part) else part for part in rest))


def pointer_path(pointer: str, *documents: Any) -> tuple[Any, ...]:
    """Turn a JSON Pointer into components, reading array-ness from the first document that has the parent."""
    tokens = [token.replace("~1", "/").replace("~0", "~") for token in pointer.split("/")[1:]]
    for document in documents:
        path: list[Any] = []
        node = document
        for token in tokens:
            if isinstance(node, list):
                path.append(int(token))
                node = node[int(token)] if int(token) < len(node) else None
            elif isinstance(node, dict):
                path.append(token)
                node = node.get(token)
            else:
                break
        else:
            return tuple(path)
    raise AssertionError(f"{pointer} fits no document")


def check_clean(event: ChangeEvent, rules: Rules) -> None:
    """Nothing hidden appears anywhere in the event."""
    for document in (event.full_document, event.full_document_before_change):
        if document is not None:
            assert rules.project(document) == document
    update = event.update_description
    if update is not None:
        for key, value in update.updated_fields.items():
            rules.check_value_at(components(key, update.disambiguated_paths), value)
        for key in [*update.removed_fields, *(field for field, _ in update.truncated_arrays)]:
            path = components(key, update.disambiguated_paths)
            assert not rules.denied(path) and (rules.allowed(path) or rules.leads_to_allowed(path)), key
        assert set(update.disambiguated_paths) <= {
            *update.updated_fields,
            *update.removed_fields,
            *(field for field, _ in update.truncated_arrays),
        }
    if event.full_document is None and event.full_document_before_change is None:
        return
    for operation in event.patch or ():
        path = pointer_path(operation["path"], event.full_document, event.full_document_before_change)
        assert not rules.denied(path) or (operation.get("value") is None and isinstance(path[-1], int)), operation
        if "value" in operation:
            rules.check_value_at(path, operation["value"])


def check_patch(before: Any, patch: Any, after: Any) -> None:
    assert apply_patch(before, patch) == after
    assert jsonpatch.apply_patch(before, list(patch)) == after


def update_event(after: Any, before: Any, update: UpdateDescription) -> ChangeEvent:
    return ChangeEvent(
        "c", "update", 1, full_document=after, full_document_before_change=before, update_description=update
    )


def label_case(rules: Rules, update: UpdateDescription, result: ChangeEvent | Drop) -> None:
    """Record what kind of case ran, for ``--hypothesis-show-statistics``."""
    event("allow-list" if rules.allow is not None else "deny-list")
    event(f"outcome: {result.reason if isinstance(result, Drop) else 'published'}")
    event(f"patch: {'none' if isinstance(result, Drop) or result.patch is None else 'given'}")
    for name, present in [
        ("truncated", update.truncated_arrays),
        ("disambiguated", update.disambiguated_paths),
        ("removed", update.removed_fields),
        ("index key", any(key.split(".")[-1].isdigit() for key in update.updated_fields)),
    ]:
        if present:
            event(name)


rule_sets = st.builds(Rules, deny=patterns, allow=st.none() | patterns, underscore=st.booleans())


class TestReferenceUpdates:
    @SETTINGS
    @given(before=documents, data=st.data())
    def test_apply_update_rebuilds_post_image(self, before: dict[str, Any], data: st.DataObject) -> None:
        """Applying a generated updateDescription to the pre-image gives the post-image exactly."""
        after = mutate(before, data)
        assert canonical(apply_update(before, describe(before, after, data))) == canonical(after)


class TestPipelineProperties:
    @SETTINGS
    @given(before=documents, rules=rule_sets, data=st.data())
    def test_both_images(self, before: dict[str, Any], rules: Rules, data: st.DataObject) -> None:
        """With both images the event matches the reference projection and its patch rebuilds the post-image."""
        after = mutate(before, data)
        update = describe(before, after, data)
        result = Pipeline([rules.route]).process(update_event(after, before, update))
        label_case(rules, update, result)
        shown_before, shown_after = rules.project(before), rules.project(after)
        if isinstance(result, Drop):
            assert result.reason == "denied-only"
            assert shown_before == shown_after
            return
        assert canonical(result.full_document) == canonical(shown_after)
        assert result.full_document_before_change == shown_before
        assert result.patch is not None
        check_patch(result.full_document_before_change, result.patch, result.full_document)
        check_clean(result, rules)

    @SETTINGS
    @given(before=documents, rules=rule_sets, data=st.data())
    def test_pre_image_only(self, before: dict[str, Any], rules: Rules, data: st.DataObject) -> None:
        """With only a pre-image the post-image is rebuilt, projected exactly, and the patch leads to it."""
        after = mutate(before, data)
        update = describe(before, after, data)
        result = Pipeline([rules.route]).process(update_event(None, before, update))
        if isinstance(result, Drop):
            assert result.reason == "denied-only"
            assert rules.project(before) == rules.project(after)
            return
        assert canonical(result.full_document) == canonical(rules.project(after))
        assert result.full_document_before_change == rules.project(before)
        assert result.patch is not None
        check_patch(result.full_document_before_change, result.patch, result.full_document)
        check_clean(result, rules)

    @SETTINGS
    @given(before=documents, rules=rule_sets, data=st.data())
    def test_no_images(self, before: dict[str, Any], rules: Rules, data: st.DataObject) -> None:
        """Without images the update is filtered, and a patch, when given, turns the client's copy into the new one."""
        after = mutate(before, data)
        update = describe(before, after, data)
        result = Pipeline([rules.route]).process(update_event(None, None, update))
        label_case(rules, update, result)
        if isinstance(result, Drop):
            assert result.reason == "denied-only"
            assert rules.project(before) == rules.project(after)
            return
        check_clean(result, rules)
        if result.patch is not None:
            for operation in result.patch:
                rules.check_value_at(
                    pointer_path(operation["path"], rules.project(after), rules.project(before)), operation.get("value")
                )
            check_patch(rules.project(before), result.patch, rules.project(after))


json_anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=12,
)
any_documents = st.none() | st.dictionaries(
    st.text(max_size=4) | st.sampled_from([*NAMES, "flowId"]), json_anything, max_size=4
)
any_updates = st.none() | st.builds(
    UpdateDescription,
    updated_fields=st.dictionaries(st.text(".0a_$", max_size=6), json_anything, max_size=3),
    removed_fields=st.lists(st.text(".0a_", max_size=6), max_size=2).map(tuple),
    truncated_arrays=st.lists(st.tuples(st.text(".0a", max_size=4), st.integers(-1, 3)), max_size=2).map(tuple),
    disambiguated_paths=st.dictionaries(
        st.text(".0a", max_size=6), st.lists(st.text(".0a", max_size=3) | st.integers(-1, 3), max_size=3), max_size=2
    ),
)


class TestRobustness:
    @SETTINGS
    @given(
        operation=st.sampled_from(["insert", "update", "replace", "delete"]),
        after=any_documents,
        before=any_documents,
        update=any_updates,
        key=st.dictionaries(st.sampled_from(["_id", "flowId"]), json_anything, max_size=2),
        document_id=json_anything,
        rules=rule_sets,
        flow_id_path=st.sampled_from(["_id", "flowId", "a.b", "0"]),
        drop_when=st.sampled_from([(), ({"a": {"$exists": True}},), ({"secret": {"$in": [1, "a"]}, "b.0": None},)]),
    )
    def test_process_never_raises(
        self,
        operation: Any,
        after: Any,
        before: Any,
        update: Any,
        key: Any,
        document_id: Any,
        rules: Rules,
        flow_id_path: str,
        drop_when: Any,
    ) -> None:
        """Arbitrary JSON-like events give an event or a drop, never an exception."""
        route = Route(
            "c",
            "t",
            flow_id_path=flow_id_path,
            drop_when=drop_when,
            deny=rules.route.deny,
            allow=rules.route.allow,
            deny_underscore=rules.underscore,
        )
        event = ChangeEvent(
            "c",
            operation,
            document_id,
            full_document=after,
            full_document_before_change=before,
            update_description=update,
            document_key=key,
        )
        result = Pipeline([route]).process(event)
        assert isinstance(result, ChangeEvent | Drop)
        if isinstance(result, Drop):
            assert result.reason in {"unroutable", "unverifiable", "private", "denied-only"}
        else:
            assert result.patch is None or all(isinstance(operation, dict) for operation in result.patch)
            for document in (result.full_document, result.full_document_before_change):
                if document is not None:
                    assert rules.project(document) == document


class TestMemo:
    @SETTINGS
    @given(before=documents, rules=rule_sets, data=st.data())
    def test_successive_updates(self, before: dict[str, Any], rules: Rules, data: st.DataObject) -> None:
        """Fed each post-image as the next pre-image, a remembering pipeline projects exactly and patches correctly."""
        pipeline = Pipeline([rules.route], memo_documents=2)
        reused = 0
        with mock.patch("filters.builtin.project_successor", wraps=builtin.project_successor) as successor:
            for _ in range(data.draw(st.integers(2, 4), label="updates")):
                update = describe(before, mutate(before, data), data)
                after = apply_update(before, update)
                result = pipeline.process(update_event(after, before, update))
                reused = successor.call_count
                if after is not before:  # an empty update leaves the very same document
                    pipeline.forget("c", before)
                if isinstance(result, Drop):
                    assert result.reason == "denied-only"
                    assert rules.project(before) == rules.project(after)
                else:
                    assert canonical(result.full_document) == canonical(rules.project(after))
                    assert canonical(result.full_document_before_change) == canonical(rules.project(before))
                    assert result.patch is not None
                    check_patch(result.full_document_before_change, result.patch, result.full_document)
                before = after
        event(f"memo reused: {min(reused, 2)}")
        if rules.allow is None and not rules.deny and not rules.underscore:
            assert reused == 0  # the route changes nothing: no projection stage, no memo
        else:
            assert reused >= 1


# --- shortcuts against the full path -----------------------------------------------------------------


def strict(value: Any) -> str:
    """JSON with member order kept: ``True`` differs from ``1``, ``1`` from ``1.0``, and order counts."""
    return json.dumps(value)


def copied(value: Any) -> Any:
    """An equal value that shares no container with ``value``, so no shortcut by identity applies."""
    return None if value is None else json.loads(json.dumps(value))


def strict_result(result: tuple[ChangeEvent, ...] | Drop) -> Any:
    if isinstance(result, Drop):
        return ("drop", result.reason, result.detail)
    described = []
    for published in result:
        update = published.update_description
        described.append(
            (
                published.operation,
                published.event_type,
                published.flow_id,
                strict(published.full_document),
                strict(published.full_document_before_change),
                None if published.patch is None else strict(list(published.patch)),
                None
                if update is None
                else (
                    strict(update.updated_fields),
                    update.removed_fields,
                    update.truncated_arrays,
                    sorted(update.disambiguated_paths.items()),
                ),
            )
        )
    return described


def moved(document: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """``document`` with, at times, another flow id or another visibility (a move, or going private)."""
    document = dict(document)
    if data.draw(st.booleans(), label="change flow"):
        document["flowId"] = data.draw(st.sampled_from(["f1", "f2", 3]), label="flow")
    if data.draw(st.booleans(), label="change visibility"):
        document["visibility"] = data.draw(st.sampled_from(["team", "private"]), label="visibility")
    return document


class TestShortcuts:
    @SETTINGS
    @given(before=documents, rules=rule_sets, data=st.data())
    def test_successor_projection_is_the_full_projection(
        self, before: dict[str, Any], rules: Rules, data: st.DataObject
    ) -> None:
        """Projecting a post-image from the pre-image's projection gives the full projection, member order included."""
        root = builtin.compile_visibility(rules.route, use_allow=True).root
        update = describe(before, mutate(before, data), data)
        after = apply_update(before, update)
        shown_before = visibility.project_document(before, root)
        successor = visibility.project_successor(after, before, shown_before, root)
        assert strict(successor) == strict(visibility.project_document(copied(after), root))
        assert strict(diff(shown_before, successor)) == strict(diff(copied(shown_before), copied(successor)))

    @SETTINGS
    @given(first=documents, rules=rule_sets, data=st.data())
    def test_remembering_pipeline_matches_the_full_path(
        self, first: dict[str, Any], rules: Rules, data: st.DataObject
    ) -> None:
        """Over successive updates (denied fields, arrays, removals, truncations, dotted keys, moves between
        flows, going private and back), the shortcuts give exactly what the full path gives on copies."""
        route = Route(
            "c",
            "t",
            flow_id_path="flowId",
            drop_when=({"visibility": "private"},),
            deny=rules.route.deny,
            allow=rules.route.allow,
            deny_underscore=rules.underscore,
        )
        fast = Pipeline([route], memo_documents=4)
        full = Pipeline([route])
        before: dict[str, Any] = {"flowId": "f1", **first}
        with mock.patch("filters.builtin.project_successor", wraps=builtin.project_successor) as successor:
            for _ in range(data.draw(st.integers(1, 5), label="updates")):
                update = describe(before, moved(mutate(before, data), data), data)
                after = apply_update(before, update)
                expected = full.process_all(update_event(copied(after), copied(before), update))
                got = fast.process_all(update_event(after, before, update), remember=True)
                assert strict_result(got) == strict_result(expected)
                before = after
        event("shortcut taken" if successor.call_count else "shortcut not taken")
