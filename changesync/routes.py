"""Routes: which collections are watched, and how their changes become events (the file's
``[routes.<name>]`` and ``[filters]`` tables).

Every key of a route table is declared once in ``ROUTE_KEYS``, with its parser, default and help
text; ``docs/configuration.md`` shows the table ``route_keys_table()`` makes of them.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from filters import Filter, Route

from .errors import ConfigError
from .parsers import Boolean, Choice, Integer, Parser, Text, did_you_mean, shown, table_row

EVENT_TYPE_PATTERN = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
COLLECTION_NAME_PATTERN = re.compile(r"[^$\x00]{1,255}")
DOTTED_PATH_PATTERN = re.compile(r"[^.$\x00][^.\x00]*(\.[^.\x00]+)*")
STAGE_PATH_PATTERN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")

SnapshotMode = Literal["one", "all", "latest", "log", "none"]
OverflowPolicy = Literal["coalesce", "collapse", "keep"]


@dataclass(frozen=True, slots=True)
class RouteOptions:
    """What the service (not the filter pipeline) needs to know about a route; see ``ROUTE_KEYS``."""

    snapshot: SnapshotMode = "all"
    snapshot_limit: int = 10_000
    overflow: OverflowPolicy = "keep"
    log_execution: str = "executionId"
    log_node: str = "nodeId"
    log_text: str = "chunk"
    log_tail_bytes: int = 65_536


# Applied to every route unless the file's [filters] table says otherwise.
DEFAULT_FILTERS: dict[str, Any] = {
    "drop_when": [{"visibility": "private"}, {"internal": True}],
    "deny": ["secrets", "data.credentials"],
    "deny_underscore": True,
    "origin_field": "meta.mutationId",
}

DEFAULT_ROUTES: dict[str, dict[str, Any]] = {
    "flowboards": {
        "event_type": "SYNC_CANVAS",
        "flow_id": "_id",
        "deny": ["nodes.*.data.credentials"],
        "snapshot": "one",
        "overflow": "coalesce",
    },
    "flow_nodes": {"event_type": "SYNC_CANVAS", "flow_id": "flowId", "snapshot": "all", "overflow": "coalesce"},
    "flow_edges": {"event_type": "SYNC_CANVAS", "flow_id": "flowId", "snapshot": "all", "overflow": "coalesce"},
    "flow_executions": {
        "event_type": "EXECUTION_UPDATE",
        "flow_id": "flowId",
        "snapshot": "latest",
        "overflow": "keep",
    },
    "flow_logs": {"event_type": "LOG_STREAM", "flow_id": "flowId", "snapshot": "log", "overflow": "collapse"},
}


class _StringList(Parser):
    expected = "a list of non-empty strings"

    def __call__(self, key: str, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise self.fail(key, value)
        return tuple(value)


class _Predicates(Parser):
    expected = 'a list of non-empty tables, e.g. [{visibility = "private"}]'

    def __call__(self, key: str, value: Any) -> tuple[Mapping[str, Any], ...]:
        if not isinstance(value, list) or not all(isinstance(item, dict) and item for item in value):
            raise self.fail(key, value)
        return tuple(value)


def _is_dotted_path(value: Any) -> bool:
    return isinstance(value, str) and DOTTED_PATH_PATTERN.fullmatch(value) is not None


class _DottedPath(Parser):
    expected = 'a dotted field path such as "nodeId"'

    def __call__(self, key: str, value: Any) -> str:
        if not _is_dotted_path(value):
            raise self.fail(key, value)
        return str(value)


class _OriginField(Parser):
    expected = 'a dotted field path such as "meta.mutationId", or "" for none'

    def __call__(self, key: str, value: Any) -> str | None:
        if value == "":
            return None
        if not _is_dotted_path(value):
            raise self.fail(key, value)
        return str(value)


class _EventType(Parser):
    expected = "an upper-case name such as SYNC_CANVAS"

    def __call__(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not EVENT_TYPE_PATTERN.fullmatch(value):
            raise self.fail(key, value)
        return value


class _Collection(Parser):
    expected = "a collection name (no $, not system.*)"

    def __call__(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not COLLECTION_NAME_PATTERN.fullmatch(value) or value.startswith("system."):
            raise self.fail(key, value)
        return value


class _Stages(Parser):
    expected = "a list of import paths such as 'package.module:callable'"

    def __call__(self, key: str, value: Any) -> tuple[str, ...]:
        paths = _StringList()(key, value)
        for path in paths:
            if not STAGE_PATH_PATTERN.fullmatch(path):
                raise ConfigError(key, path, "an import path such as 'package.module:callable'")
        return paths


@dataclass(frozen=True, slots=True)
class RouteKey:
    """One key of a ``[routes.<name>]`` table (``None`` default: required)."""

    parser: Parser
    default: Any
    help: str


ROUTE_KEYS: dict[str, RouteKey] = {
    "collection": RouteKey(_Collection(), "<table name>", "The watched collection."),
    "event_type": RouteKey(_EventType(), None, "The event type its changes produce."),
    "flow_id": RouteKey(
        Text(), "flowId", "Dotted path of the flow id (a string, an integer or an ObjectId), or `_id`."
    ),
    "drop_when": RouteKey(
        _Predicates(),
        [],
        "Predicates: a document matching any of them is private and never published (adds to `[filters]`).",
    ),
    "deny": RouteKey(
        _StringList(), [], "Path patterns removed everywhere (`*`: one field or index; adds to `[filters]`)."
    ),
    "allow": RouteKey(
        _StringList(), None, "Allow-list mode: only these path patterns (and `_id`) pass; `deny` still applies."
    ),
    "deny_underscore": RouteKey(
        Boolean(), True, "Remove every field starting with `_` at any depth, except the top-level `_id`."
    ),
    "stages": RouteKey(_Stages(), [], "Your own stages, as `package.module:callable`."),
    "snapshot": RouteKey(
        Choice("one", "all", "latest", "log", "none"),
        "all",
        "What a `SNAPSHOT` holds: `one` document (whose flow id path is the flow), `all` the flow's,"
        " the `latest` (highest `_id`), `log`: the latest execution's text so far by node (log chunks), or `none`.",
    ),
    "snapshot_limit": RouteKey(
        Integer(1, 1_000_000),
        10_000,
        "Most documents in a snapshot (`truncated` is set beyond); with `log`, most chunks read.",
    ),
    "log_execution": RouteKey(
        _DottedPath(), "executionId", 'With `snapshot = "log"`: where a chunk names its execution.'
    ),
    "log_node": RouteKey(_DottedPath(), "nodeId", 'With `snapshot = "log"`: where a chunk names its node.'),
    "log_text": RouteKey(
        _DottedPath(), "chunk", 'With `snapshot = "log"`: a chunk\'s text (chunks without a string there are skipped).'
    ),
    "log_tail_bytes": RouteKey(
        Integer(1, 16 * 1024 * 1024),
        65_536,
        'With `snapshot = "log"`: most UTF-8 bytes of text per node; the tail is kept and `truncated` set.',
    ),
    "overflow": RouteKey(
        Choice("coalesce", "collapse", "keep"),
        "keep",
        "How a slow client's full queue sheds this route's events: `coalesce` a document's changes,"
        " `collapse` log chunks, or `keep`.",
    ),
}
FILTER_KEYS = ("drop_when", "deny", "deny_underscore", "origin_field")


def _route(name: str, table: Any, shared: Mapping[str, Any]) -> tuple[Route, RouteOptions, tuple[str, ...]]:
    prefix = f"routes.{name}"
    if not isinstance(table, dict):
        raise ConfigError(prefix, table, "a table")
    for key in table:
        if key not in ROUTE_KEYS:
            raise ConfigError(f"{prefix}.{key}", table[key], did_you_mean(key, ROUTE_KEYS, what="route key"))

    def read(key: str) -> Any:
        spec = ROUTE_KEYS[key]
        if key in table:
            return spec.parser(f"{prefix}.{key}", table[key])
        if key == "event_type":
            raise ConfigError(f"{prefix}.{key}", None, spec.parser.expected)
        return None if spec.default is None else spec.parser(f"{prefix}.{key}", spec.default)

    collection = ROUTE_KEYS["collection"].parser(f"{prefix}.collection", table.get("collection", name))
    route = Route(
        collection=collection,
        event_type=read("event_type"),
        flow_id_path=read("flow_id"),
        drop_when=_Predicates()("filters.drop_when", shared["drop_when"]) + read("drop_when"),
        deny=_StringList()("filters.deny", shared["deny"]) + read("deny"),
        allow=read("allow"),
        deny_underscore=Boolean()(f"{prefix}.deny_underscore", table.get("deny_underscore", shared["deny_underscore"])),
        origin_field=_OriginField()("filters.origin_field", shared["origin_field"]),
    )
    options = RouteOptions(
        snapshot=read("snapshot"),
        snapshot_limit=read("snapshot_limit"),
        overflow=read("overflow"),
        log_execution=read("log_execution"),
        log_node=read("log_node"),
        log_text=read("log_text"),
        log_tail_bytes=read("log_tail_bytes"),
    )
    return route, options, read("stages")


def import_stage(key: str, path: str) -> Filter:
    module_name, _, attribute = path.partition(":")
    try:
        stage = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(key, path, f"an importable callable ({type(exc).__name__}: {exc})") from exc
    if not callable(stage):
        raise ConfigError(key, path, "a callable")
    return stage  # type: ignore[no-any-return]


def load_routes(
    document: Mapping[str, Any],
) -> tuple[tuple[Route, ...], dict[str, RouteOptions], dict[str, tuple[str, ...]]]:
    shared = dict(DEFAULT_FILTERS)
    file_filters = document.get("filters", {})
    if not isinstance(file_filters, dict):
        raise ConfigError("filters", file_filters, "a table")
    for key, value in file_filters.items():
        if key not in FILTER_KEYS:
            raise ConfigError(f"filters.{key}", value, "one of " + ", ".join(FILTER_KEYS))
        shared[key] = value

    tables = document.get("routes", DEFAULT_ROUTES)
    if not isinstance(tables, dict) or not tables:
        raise ConfigError("routes", tables, "at least one [routes.<name>] table")
    routes: list[Route] = []
    options: dict[str, RouteOptions] = {}
    stages: dict[str, tuple[str, ...]] = {}
    for name, table in tables.items():
        route, route_options, route_stages = _route(name, table, shared)
        if route.collection in options:
            raise ConfigError(f"routes.{name}.collection", route.collection, "a collection no other route uses")
        routes.append(route)
        options[route.collection] = route_options
        if route_stages:
            stages[route.collection] = route_stages
    return tuple(routes), options, stages


def route_keys_table() -> str:
    """The Markdown table of the keys of a ``[routes.<name>]`` table."""
    lines = ["| key | default | allowed | what it does |", "| --- | --- | --- | --- |"]
    for key, spec in ROUTE_KEYS.items():
        default = "required" if spec.default is None and key == "event_type" else shown(spec.default)
        lines.append(table_row(f"`{key}`", default, spec.parser.expected, spec.help))
    return "\n".join(lines)
