"""Configuration: built-in defaults < TOML file < ``CHANGESYNC_*`` environment < command-line flags.

Every scalar setting has one dotted key (``stream.heartbeat_interval_s``) that is its name in the
TOML file (``[stream] heartbeat_interval_s = 15``) and, upper-cased with ``_`` for ``.``, its
environment variable (``CHANGESYNC_STREAM_HEARTBEAT_INTERVAL_S``). Routes live in the file only.
Settings are read once, validated into frozen objects, and passed down explicitly.
"""

from __future__ import annotations

import importlib
import json
import re
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from filters import Filter, Route
from filters.errors import FilterError

from .errors import ConfigError

ENV_PREFIX = "CHANGESYNC_"
CONFIG_ENV = "CHANGESYNC_CONFIG"
# Variables that belong to the test suite, not to the service.
IGNORED_ENV_PREFIXES = ("CHANGESYNC_TEST_",)

EVENT_TYPE_PATTERN = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
# MongoDB forbids these characters in database names on every platform.
DATABASE_NAME_PATTERN = re.compile(r'[^/\\. "$*<>:|?\x00]{1,63}')
COLLECTION_NAME_PATTERN = re.compile(r"[^$\x00]{1,255}")
STAGE_PATH_PATTERN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")

ORIGIN_PATTERN = re.compile(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?")
# HS256 keys shorter than the hash output are weak (RFC 7518 section 3.2 asks for at least 256 bits).
MIN_SECRET_LENGTH = 32

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["auto", "json", "text"]


SnapshotMode = Literal["one", "all", "latest", "none"]
OverflowPolicy = Literal["coalesce", "collapse", "keep"]


@dataclass(frozen=True, slots=True)
class StreamSettings:
    heartbeat_interval_s: float = 15.0
    retry_ms: int = 3000
    client_queue_size: int = 1000
    send_timeout_s: float = 30.0
    max_await_time_ms: int = 1000
    ready_max_lag_s: float = 30.0
    snapshot_on_connect: bool = True
    snapshot_timeout_s: float = 10.0
    catch_up_timeout_s: float = 30.0
    replay_per_flow: int = 256
    replay_max_bytes: int = 64 * 1024 * 1024
    document_cache_bytes: int = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RouteOptions:
    """What the service (not the filter pipeline) needs to know about a route.

    - ``snapshot``: what a ``SNAPSHOT`` holds of this collection: the ``one`` document whose flow id
      path is the flow (``_id`` routes), ``all`` of the flow's documents, the ``latest`` one (highest
      ``_id``), or ``none``.
    - ``overflow``: how a slow client's full queue sheds this route's events before it is cut off:
      ``coalesce`` changes of one document into its latest state, ``collapse`` (log chunks) into a
      count of skipped ones, or ``keep`` (never dropped).
    """

    snapshot: SnapshotMode = "all"
    snapshot_limit: int = 10_000
    overflow: OverflowPolicy = "keep"


AuthMode = Literal["jwt", "none"]

DEFAULT_ACCESS_QUERY = '{"_id": "{flowId}", "$or": [{"ownerId": "{sub}"}, {"members": "{sub}"}]}'


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Who may subscribe. ``mode = "jwt"`` (the default) needs one of the three key sources.

    ``access_query`` is a JSON MongoDB query on ``access_collection``: a subject may read a flow
    when a document matches. ``"{flowId}"`` and ``"{sub}"`` stand for the flow and the subject.
    """

    mode: AuthMode = "jwt"
    jwt_secret: str = field(default="", repr=False)
    jwt_public_key_file: str = ""
    jwks_file: str = ""
    issuer: str = ""
    audience: str = ""
    header: bool = True
    cookie: bool = True
    query: bool = True
    cookie_name: str = "changesync_token"
    roles_claim: str = "roles"
    service_role: str = "changesync-service"
    access_collection: str = "flowboards"
    access_query: str = DEFAULT_ACCESS_QUERY
    cache_ttl_s: float = 30.0


@dataclass(frozen=True, slots=True)
class LimitSettings:
    max_connections: int = 10_000
    max_connections_per_subject: int = 50
    max_event_bytes: int = 1024 * 1024
    request_head_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class CorsSettings:
    allow_origins: tuple[str, ...] = ()
    allow_credentials: bool = True


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: LogLevel = "INFO"
    format: LogFormat = "auto"


@dataclass(frozen=True, slots=True)
class Settings:
    mongodb_uri: str = field(default="mongodb://127.0.0.1:27017/?directConnection=true", repr=False)
    database: str = "flow_editor"
    host: str = "127.0.0.1"
    port: int = 8000
    stream: StreamSettings = field(default_factory=StreamSettings)
    log: LogSettings = field(default_factory=LogSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    cors: CorsSettings = field(default_factory=CorsSettings)
    routes: tuple[Route, ...] = ()
    route_options: Mapping[str, RouteOptions] = field(default_factory=dict)
    """Collection name → the route's service options."""
    stages: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Collection name (or ``"*"``) → import paths ``"module:callable"`` of user stages."""

    @property
    def redacted_uri(self) -> str:
        return redact_uri(self.mongodb_uri)

    def load_stages(self) -> dict[str, list[Filter]]:
        """Import the user stages named in the configuration."""
        return {
            collection: [_import_stage(f"routes.{collection}.stages", path) for path in paths]
            for collection, paths in self.stages.items()
        }


def redact_uri(uri: str) -> str:
    """The URI with its password replaced by ``***``, safe to log."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# --- scalar settings -------------------------------------------------------------------------

Parser = Callable[[str, Any], Any]


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, value, "a non-empty string")
    return value


def _uri(key: str, value: Any) -> str:
    text = _text(key, value)
    if not text.startswith(("mongodb://", "mongodb+srv://")):
        raise ConfigError(key, redact_uri(text), "a URI starting with mongodb:// or mongodb+srv://")
    return text


def _database(key: str, value: Any) -> str:
    text = _text(key, value)
    if not DATABASE_NAME_PATTERN.fullmatch(text):
        raise ConfigError(key, value, 'a MongoDB database name (1-63 characters, none of /\\. "$*<>:|?)')
    return text


def _integer(low: int, high: int) -> Parser:
    def parse(key: str, value: Any) -> int:
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise ConfigError(key, value, f"an integer from {low} to {high}") from None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(key, value, f"an integer from {low} to {high}")
        return value

    return parse


def _seconds(minimum_exclusive: float) -> Parser:
    def parse(key: str, value: Any) -> float:
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ConfigError(key, value, f"a number of seconds > {minimum_exclusive:g}") from None
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > minimum_exclusive:
            raise ConfigError(key, value, f"a number of seconds > {minimum_exclusive:g}")
        if value != value or value == float("inf"):
            raise ConfigError(key, value, "a finite number of seconds")
        return float(value)

    return parse


def _secret(key: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
        shown = "<empty>" if not value else "<hidden>"
        raise ConfigError(key, shown, f"a secret of at least {MIN_SECRET_LENGTH} characters")
    return value


def _json_object(key: str, value: Any) -> str:
    text = json.dumps(value) if isinstance(value, dict) else value
    try:
        parsed = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict) or not parsed:
        raise ConfigError(key, value, "a MongoDB query as a JSON object (or a TOML table)")
    return str(text)


def _origins(key: str, value: Any) -> tuple[str, ...]:
    items = [item.strip() for item in value.split(",")] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
        raise ConfigError(key, value, "a list of origins such as https://app.example.com")
    origins = tuple(item.rstrip("/") for item in items if item)
    for origin in origins:
        if origin != "*" and not ORIGIN_PATTERN.fullmatch(origin):
            raise ConfigError(key, origin, "an origin: scheme://host[:port], no path")
    return origins


def _choice(*choices: str, upper: bool = False) -> Parser:
    def parse(key: str, value: Any) -> str:
        if isinstance(value, str):
            value = value.upper() if upper else value.lower()
        if value not in choices:
            raise ConfigError(key, value, "one of " + ", ".join(choices))
        return str(value)

    return parse


SCALARS: dict[str, Parser] = {
    "mongodb_uri": _uri,
    "database": _database,
    "host": _text,
    "port": _integer(0, 65535),
    "stream.heartbeat_interval_s": _seconds(0),
    "stream.retry_ms": _integer(0, 3_600_000),
    "stream.client_queue_size": _integer(1, 1_000_000),
    "stream.send_timeout_s": _seconds(0),
    "stream.max_await_time_ms": _integer(1, 60_000),
    "stream.ready_max_lag_s": _seconds(0),
    "stream.snapshot_on_connect": lambda key, value: _boolean(key, value),
    "stream.snapshot_timeout_s": _seconds(0),
    "stream.catch_up_timeout_s": _seconds(0),
    "stream.replay_per_flow": _integer(0, 100_000),
    "stream.replay_max_bytes": _integer(0, 2**40),
    "stream.document_cache_bytes": _integer(0, 2**40),
    "log.level": _choice("DEBUG", "INFO", "WARNING", "ERROR", upper=True),
    "log.format": _choice("auto", "json", "text"),
    "auth.mode": _choice("jwt", "none"),
    "auth.jwt_secret": _secret,
    "auth.jwt_public_key_file": _text,
    "auth.jwks_file": _text,
    "auth.issuer": _text,
    "auth.audience": _text,
    "auth.header": lambda key, value: _boolean(key, value),
    "auth.cookie": lambda key, value: _boolean(key, value),
    "auth.query": lambda key, value: _boolean(key, value),
    "auth.cookie_name": _text,
    "auth.roles_claim": _text,
    "auth.service_role": _text,
    "auth.access_collection": _text,
    "auth.access_query": _json_object,
    "auth.cache_ttl_s": _seconds(0),
    "limits.max_connections": _integer(1, 10_000_000),
    "limits.max_connections_per_subject": _integer(1, 10_000_000),
    "limits.max_event_bytes": _integer(1024, 64 * 1024 * 1024),
    "limits.request_head_timeout_s": _seconds(0),
    "cors.allow_origins": lambda key, value: _origins(key, value),
    "cors.allow_credentials": lambda key, value: _boolean(key, value),
}
SECTIONS = {"stream", "log", "auth", "limits", "cors", "filters", "routes"}


def env_name(key: str) -> str:
    return ENV_PREFIX + key.replace(".", "_").upper()


# --- routes ----------------------------------------------------------------------------------

# Applied to every route unless the file's [filters] table says otherwise.
DEFAULT_FILTERS: dict[str, Any] = {
    "drop_when": [{"visibility": "private"}, {"internal": True}],
    "deny": ["secrets", "data.credentials"],
    "deny_underscore": True,
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
    "flow_logs": {"event_type": "LOG_STREAM", "flow_id": "flowId", "snapshot": "none", "overflow": "collapse"},
}

ROUTE_KEYS = {
    "collection",
    "event_type",
    "flow_id",
    "drop_when",
    "deny",
    "allow",
    "deny_underscore",
    "stages",
    "snapshot",
    "snapshot_limit",
    "overflow",
}
FILTER_KEYS = {"drop_when", "deny", "deny_underscore"}


def _string_list(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ConfigError(key, value, "a list of non-empty strings")
    return tuple(value)


def _predicates(key: str, value: Any) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, list) or not all(isinstance(item, dict) and item for item in value):
        raise ConfigError(key, value, 'a list of non-empty tables, e.g. [{visibility = "private"}]')
    return tuple(value)


def _boolean(key: str, value: Any) -> bool:
    if isinstance(value, str) and value.lower() in {"true", "false", "1", "0"}:
        return value.lower() in {"true", "1"}
    if not isinstance(value, bool):
        raise ConfigError(key, value, "true or false")
    return value


def _route(name: str, table: Any, shared: Mapping[str, Any]) -> tuple[Route, RouteOptions, tuple[str, ...]]:
    prefix = f"routes.{name}"
    if not isinstance(table, dict):
        raise ConfigError(prefix, table, "a table")
    unknown = set(table) - ROUTE_KEYS
    if unknown:
        raise ConfigError(
            f"{prefix}.{sorted(unknown)[0]}", table[sorted(unknown)[0]], "one of " + ", ".join(sorted(ROUTE_KEYS))
        )
    collection = _text(f"{prefix}.collection", table.get("collection", name))
    if not COLLECTION_NAME_PATTERN.fullmatch(collection) or collection.startswith("system."):
        raise ConfigError(f"{prefix}.collection", collection, "a collection name (no $, not system.*)")
    event_type = table.get("event_type")
    if not isinstance(event_type, str) or not EVENT_TYPE_PATTERN.fullmatch(event_type):
        raise ConfigError(f"{prefix}.event_type", event_type, "an upper-case name such as SYNC_CANVAS")
    allow = table.get("allow")
    route = Route(
        collection=collection,
        event_type=event_type,
        flow_id_path=_text(f"{prefix}.flow_id", table.get("flow_id", "flowId")),
        drop_when=_predicates("filters.drop_when", shared["drop_when"])
        + _predicates(f"{prefix}.drop_when", table.get("drop_when", [])),
        deny=_string_list("filters.deny", shared["deny"]) + _string_list(f"{prefix}.deny", table.get("deny", [])),
        allow=None if allow is None else _string_list(f"{prefix}.allow", allow),
        deny_underscore=_boolean(f"{prefix}.deny_underscore", table.get("deny_underscore", shared["deny_underscore"])),
    )
    stages = _string_list(f"{prefix}.stages", table.get("stages", []))
    for path in stages:
        if not STAGE_PATH_PATTERN.fullmatch(path):
            raise ConfigError(f"{prefix}.stages", path, "an import path such as 'package.module:callable'")
    options = RouteOptions(
        snapshot=_choice("one", "all", "latest", "none")(f"{prefix}.snapshot", table.get("snapshot", "all")),
        snapshot_limit=_integer(1, 1_000_000)(f"{prefix}.snapshot_limit", table.get("snapshot_limit", 10_000)),
        overflow=_choice("coalesce", "collapse", "keep")(f"{prefix}.overflow", table.get("overflow", "keep")),
    )
    return route, options, stages


def _import_stage(key: str, path: str) -> Filter:
    module_name, _, attribute = path.partition(":")
    try:
        stage = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(key, path, f"an importable callable ({type(exc).__name__}: {exc})") from exc
    if not callable(stage):
        raise ConfigError(key, path, "a callable")
    return stage  # type: ignore[no-any-return]


# --- loading ---------------------------------------------------------------------------------


def read_config_file(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError("config", str(path), "an existing TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", str(path), f"valid TOML ({exc})") from exc


def _flatten(document: Mapping[str, Any]) -> dict[str, Any]:
    """Scalar settings of a parsed file as ``{dotted key: value}``; unknown keys are errors."""
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if key in {"routes", "filters"}:
            continue
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(key, value, "a table")
            for sub_key, sub_value in value.items():
                flat[f"{key}.{sub_key}"] = sub_value
        else:
            flat[key] = value
    for key in flat:
        if key not in SCALARS:
            raise ConfigError(key, flat[key], "a known setting (" + ", ".join(sorted(SCALARS)) + ")")
    return flat


def load_settings(
    config_path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Resolve settings from defaults, the TOML file, the environment and explicit overrides.

    ``config_path`` falls back to ``$CHANGESYNC_CONFIG``; ``overrides`` are dotted keys as given on
    the command line (``None`` values are ignored).
    """
    environ = {} if environ is None else environ
    if config_path is None and environ.get(CONFIG_ENV):
        config_path = environ[CONFIG_ENV]
    document = read_config_file(config_path) if config_path is not None else {}

    # Each value remembers where it came from, so that an error names the file key, the
    # environment variable or the flag the operator actually wrote.
    raw: dict[str, tuple[str, Any]] = {key: (key, value) for key, value in _flatten(document).items()}
    known_env = {env_name(key): key for key in SCALARS}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV or name.startswith(IGNORED_ENV_PREFIXES):
            continue
        if name not in known_env:
            raise ConfigError(name, value, "a known variable (" + ", ".join(sorted(known_env)) + ")")
        raw[known_env[name]] = (name, value)
    for key, value in (overrides or {}).items():
        if value is not None:
            raw[key] = ("--" + key.rpartition(".")[2].replace("_", "-"), value)

    values = {key: SCALARS[key](label, value) for key, (label, value) in raw.items()}
    top = {key: value for key, value in values.items() if "." not in key}
    sections: dict[str, dict[str, Any]] = {"stream": {}, "log": {}, "auth": {}, "limits": {}, "cors": {}}
    for key, value in values.items():
        if "." in key:
            section, name = key.split(".", 1)
            sections[section][name] = value

    routes, route_options, stages = _load_routes(document)
    cors = CorsSettings(**sections["cors"])
    if "*" in cors.allow_origins and cors.allow_credentials:
        raise ConfigError("cors.allow_origins", "*", "explicit origins when cors.allow_credentials is true")
    return Settings(
        **top,
        stream=StreamSettings(**sections["stream"]),
        log=LogSettings(**sections["log"]),
        auth=AuthSettings(**sections["auth"]),
        limits=LimitSettings(**sections["limits"]),
        cors=cors,
        routes=routes,
        route_options=route_options,
        stages=stages,
    )


def _load_routes(
    document: Mapping[str, Any],
) -> tuple[tuple[Route, ...], dict[str, RouteOptions], dict[str, tuple[str, ...]]]:
    shared = dict(DEFAULT_FILTERS)
    file_filters = document.get("filters", {})
    if not isinstance(file_filters, dict):
        raise ConfigError("filters", file_filters, "a table")
    for key, value in file_filters.items():
        if key not in FILTER_KEYS:
            raise ConfigError(f"filters.{key}", value, "one of " + ", ".join(sorted(FILTER_KEYS)))
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


def validate_routes(settings: Settings) -> None:
    """Build the filter pipeline once so that bad patterns or predicates fail at start-up."""
    from filters import Pipeline

    try:
        Pipeline(settings.routes, stages=settings.load_stages())
    except FilterError as exc:
        raise ConfigError("routes", str(exc), "valid filter rules") from exc
