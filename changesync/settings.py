"""Configuration: built-in defaults < TOML file < ``CHANGESYNC_*`` environment < command-line flags.

Every setting is declared once, below, as a field of a frozen dataclass: its default, its parser
(which knows the values it allows, ``changesync.parsers``) and its help text. Every scalar setting
has one dotted key (``stream.heartbeat_interval_s``) that is its name in the TOML file
(``[stream] heartbeat_interval_s = 15``) and, upper-cased with ``_`` for ``.``, its environment
variable (``CHANGESYNC_STREAM_HEARTBEAT_INTERVAL_S``). Routes live in the file only
(``changesync.routes``). ``load_settings`` reads and validates everything once, at start-up; the
configuration reference (``docs/configuration.md``) is generated from these declarations.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from filters import Filter, Route
from filters.errors import FilterError

from .errors import ConfigError
from .parsers import (
    Boolean,
    Choice,
    DatabaseName,
    HttpsUrl,
    Integer,
    JsonQuery,
    Names,
    Number,
    Origins,
    Parser,
    RedisUrl,
    Seconds,
    Secret,
    Text,
    Uri,
    did_you_mean,
    redact_uri,
    shown,
    table_row,
)
from .routes import RouteOptions, import_stage, load_routes

ENV_PREFIX = "CHANGESYNC_"
CONFIG_ENV = "CHANGESYNC_CONFIG"
# Variables that belong to the test suite, not to the service.
IGNORED_ENV_PREFIXES = ("CHANGESYNC_TEST_",)

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["auto", "json", "text"]
AuthMode = Literal["jwt", "none"]


def setting(default: Any, parser: Parser, help: str, *, flag: str = "", secret: bool = False) -> Any:
    """Declare a scalar setting: the field's default, how its values are read, and what it does."""
    metadata = {"parser": parser, "help": help, "flag": flag, "secret": secret}
    return field(default=default, repr=not secret, metadata=metadata)


# --- the settings -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamSettings:
    heartbeat_interval_s: float = setting(
        15.0, Seconds(), "A client that received nothing for this long gets a heartbeat (an id-only comment)."
    )
    retry_ms: int = setting(
        3000, Integer(0, 3_600_000), "The SSE `retry:` hint: how long a browser waits to reconnect."
    )
    client_queue_size: int = setting(
        1000, Integer(1, 1_000_000), "Events queued per client before it is shed, then cut off (`slow-consumer`)."
    )
    send_timeout_s: float = setting(30.0, Seconds(), "A socket write stuck longer than this ends the stream.")
    max_await_time_ms: int = setting(
        1000, Integer(1, 60_000), "How long the change stream's getMore waits for changes."
    )
    ready_max_lag_s: float = setting(30.0, Seconds(), "`/readyz` fails while the stream lags behind by more.")
    snapshot_on_connect: bool = setting(
        True, Boolean(), "A connection without a last event id starts with a `SNAPSHOT` (`?snapshot=` overrides it)."
    )
    snapshot_timeout_s: float = setting(10.0, Seconds(), "Longest wait for the live stream to pass a snapshot's read.")
    catch_up_timeout_s: float = setting(
        30.0, Seconds(), "A catch-up from the oplog that takes longer ends in `RESYNC` `catch-up-timeout`."
    )
    replay_per_flow: int = setting(
        256, Integer(0, 100_000), "Recent events kept per flow for reconnecting clients (0: always go to MongoDB)."
    )
    replay_max_bytes: int = setting(64 * 1024 * 1024, Integer(0, 2**40), "Bytes of recent events kept over all flows.")
    document_cache_bytes: int = setting(
        8 * 1024 * 1024,
        Integer(0, 2**40),
        "JSON bytes of recently updated documents kept for their next update (the document cache; 0: off).",
    )


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: LogLevel = setting(
        "INFO", Choice("DEBUG", "INFO", "WARNING", "ERROR", upper=True), "Log level.", flag="--log-level"
    )
    format: LogFormat = setting(
        "auto", Choice("auto", "json", "text"), "`auto`: JSON lines when stderr is not a terminal, text otherwise."
    )


DEFAULT_ACCESS_QUERY = '{"_id": "{flowId}", "$or": [{"ownerId": "{sub}"}, {"members": "{sub}"}]}'


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Who may subscribe. ``mode = "jwt"`` (the default) needs one of the four key sources."""

    mode: AuthMode = setting(
        "jwt", Choice("jwt", "none"), "`jwt`: every request needs a token. `none` turns authentication off."
    )
    jwt_secret: str = setting("", Secret(), "HS256 shared secret (at least 32 characters).", secret=True)
    jwt_public_key_file: str = setting("", Text(), "PEM public key file, for RS256/ES256 tokens.")
    jwks_file: str = setting("", Text(), "JWKS file, for RS256/ES256 tokens (the `kid` picks the key).")
    jwks_url: str = setting(
        "",
        HttpsUrl(),
        "JWKS URL of an identity provider, for RS256/ES256 tokens: fetched at start-up, cached, kept fresh.",
    )
    jwks_refresh_interval_s: float = setting(
        300.0, Seconds(), "The JWKS is fetched again this often, and soon after a token names an unknown `kid`."
    )
    jwks_timeout_s: float = setting(
        5.0, Seconds(), "A JWKS fetch that takes longer fails; the keys fetched last stay in use."
    )
    issuer: str = setting("", Text(), "Required `iss` claim (not checked when empty).")
    audience: str = setting("", Text(), "Required `aud` claim (not checked when empty).")
    header: bool = setting(True, Boolean(), "Accept `Authorization: Bearer <token>`.")
    cookie: bool = setting(True, Boolean(), "Accept the token in the cookie `auth.cookie_name`.")
    query: bool = setting(True, Boolean(), "Accept the token in the `access_token` query parameter.")
    cookie_name: str = setting("changesync_token", Text(), "The cookie that holds the token.")
    roles_claim: str = setting("roles", Text(), "The claim that lists a token's roles.")
    service_role: str = setting(
        "changesync-service", Text(), "A token with this role is a service: it may read any flow."
    )
    access_collection: str = setting("flowboards", Text(), "The collection `auth.access_query` runs on.")
    access_query: str = setting(
        DEFAULT_ACCESS_QUERY,
        JsonQuery(),
        'A subject may read a flow when this query finds a document; `"{flowId}"` and `"{sub}"` are filled in.',
    )
    cache_ttl_s: float = setting(
        30.0, Seconds(), "Authorization decisions are cached, and open streams checked again, this often."
    )


@dataclass(frozen=True, slots=True)
class LimitSettings:
    max_connections: int = setting(10_000, Integer(1, 10_000_000), "Open streams per process; more get 429.")
    max_connections_per_subject: int = setting(
        50, Integer(1, 10_000_000), "Open streams per token subject (services exempt); more get 429."
    )
    max_event_bytes: int = setting(
        1024 * 1024,
        Integer(1024, 64 * 1024 * 1024),
        'Larger events become `{"tooLarge": true, "size": n, "document": null}`: the client refetches.',
    )
    request_head_timeout_s: float = setting(
        10.0, Seconds(), "A request head not complete by then closes the connection (slow-loris)."
    )


@dataclass(frozen=True, slots=True)
class CorsSettings:
    allow_origins: tuple[str, ...] = setting(
        (), Origins(), "Origins that may connect from a browser; `*` is refused while credentials are allowed."
    )
    allow_credentials: bool = setting(True, Boolean(), "Let browsers send cookies to the stream.")


@dataclass(frozen=True, slots=True)
class HubSettings:
    """Hub mode: many processes and machines behind one watcher, through Redis or Valkey."""

    url: str = setting(
        "",
        RedisUrl(),
        "Redis or Valkey that turns hub mode on; every process with this URL and database is one deployment"
        " (empty: one process, no Redis).",
        secret=True,
    )
    lease_ttl_s: float = setting(
        5.0,
        Seconds(0.1),
        "Another process takes the watcher over this long after the watcher stops renewing its lease.",
    )
    history_per_flow: int = setting(
        1000, Integer(1, 1_000_000), "Recent events kept per flow in Redis, for clients that resume on any process."
    )
    history_ttl_s: float = setting(
        3600.0, Seconds(), "A flow's history in Redis is dropped after this long without events."
    )


@dataclass(frozen=True, slots=True)
class PublishSettings:
    """Events that are not database writes, published by back-end services (``POST /flows/{flowId}/events``)."""

    event_types: tuple[str, ...] = setting(
        (), Names(), "Event types services may publish; each must be a route's (empty: publishing is off)."
    )
    role: str = setting("changesync-publisher", Text(), "A token with this role may publish.")
    rate_per_s: float = setting(
        200.0, Number(), "Events one token subject may publish per second, in bursts of as many; more get 429."
    )


@dataclass(frozen=True, slots=True)
class Settings:
    mongodb_uri: str = setting(
        "mongodb://127.0.0.1:27017/?directConnection=true",
        Uri(),
        "The replica set or mongos to watch; its password never reaches a log.",
        flag="--mongodb-uri",
        secret=True,
    )
    database: str = setting("flow_editor", DatabaseName(), "The database to watch.", flag="--database")
    host: str = setting("127.0.0.1", Text(), "The address to listen on.", flag="--host")
    port: int = setting(8000, Integer(0, 65535), "The port to listen on.", flag="--port")
    workers: int = setting(
        1,
        Integer(1, 256),
        "Processes serving the port together (SO_REUSEPORT), to use every core; more than 1 needs hub.url.",
        flag="--workers",
    )
    demo_page: bool = setting(
        False,
        Boolean(),
        "Serve the live demo page at `/demo/` (`changesync demo` always does); open it with `#token=<JWT>&flow=<id>`.",
    )
    stream: StreamSettings = field(default_factory=StreamSettings)
    log: LogSettings = field(default_factory=LogSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    cors: CorsSettings = field(default_factory=CorsSettings)
    hub: HubSettings = field(default_factory=HubSettings)
    publish: PublishSettings = field(default_factory=PublishSettings)
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
            collection: [import_stage(f"routes.{collection}.stages", path) for path in paths]
            for collection, paths in self.stages.items()
        }


SECTIONS: dict[str, type] = {
    "stream": StreamSettings,
    "log": LogSettings,
    "auth": AuthSettings,
    "limits": LimitSettings,
    "cors": CorsSettings,
    "hub": HubSettings,
    "publish": PublishSettings,
}


@dataclass(frozen=True, slots=True)
class Declaration:
    """One scalar setting, as declared."""

    key: str
    default: Any
    parser: Parser
    help: str
    flag: str
    secret: bool

    @property
    def env(self) -> str:
        return env_name(self.key)


def _declarations() -> Iterator[Declaration]:
    def of(prefix: str, cls: type) -> Iterator[Declaration]:
        for item in dataclasses.fields(cls):
            if "parser" in item.metadata:
                meta = item.metadata
                yield Declaration(
                    prefix + item.name, item.default, meta["parser"], meta["help"], meta["flag"], meta["secret"]
                )

    yield from of("", Settings)
    for section, cls in SECTIONS.items():
        yield from of(f"{section}.", cls)


DECLARATIONS: dict[str, Declaration] = {declaration.key: declaration for declaration in _declarations()}
"""Every scalar setting by dotted key, in declaration order."""


def env_name(key: str) -> str:
    return ENV_PREFIX + key.replace(".", "_").upper()


# --- loading ------------------------------------------------------------------------------------


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
        if key not in DECLARATIONS:
            raise ConfigError(key, flat[key], did_you_mean(key, DECLARATIONS))
    return flat


def load_settings(
    config_path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    serving: bool = False,
) -> Settings:
    """Resolve and validate settings from defaults, the TOML file, the environment and flags.

    ``config_path`` falls back to ``$CHANGESYNC_CONFIG``. ``overrides`` are dotted keys as given on
    the command line (``None`` values are ignored); an error names the setting's declared flag.
    ``defaults`` replace built-in defaults (the demo brings its own JWT secret). Everything is
    checked here: values, routes and their stages, the authentication key files, and with
    ``serving`` (the service is about to start) that ``jwt`` mode has a key at all (a JWKS URL is
    fetched, once: an endpoint that does not answer stops the start).
    """
    environ = {} if environ is None else environ
    if config_path is None and environ.get(CONFIG_ENV):
        config_path = environ[CONFIG_ENV]
    document = read_config_file(config_path) if config_path is not None else {}

    # Each value remembers where it came from, so that an error names the file key, the
    # environment variable or the flag the operator actually wrote.
    raw: dict[str, tuple[str, Any]] = {key: (key, value) for key, value in (defaults or {}).items()}
    raw.update({key: (key, value) for key, value in _flatten(document).items()})
    known_env = {declaration.env: key for key, declaration in DECLARATIONS.items()}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV or name.startswith(IGNORED_ENV_PREFIXES):
            continue
        if name not in known_env:
            raise ConfigError(name, value, did_you_mean(name, known_env, what="variable", prefix=ENV_PREFIX))
        raw[known_env[name]] = (name, value)
    for key, value in (overrides or {}).items():
        if value is not None:
            raw[key] = (DECLARATIONS[key].flag or key, value)

    values = {key: DECLARATIONS[key].parser(label, value) for key, (label, value) in raw.items()}
    top = {key: value for key, value in values.items() if "." not in key}
    sections: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for key, value in values.items():
        if "." in key:
            section, name = key.split(".", 1)
            sections[section][name] = value

    routes, route_options, stages = load_routes(document)
    settings = Settings(
        **top,
        stream=StreamSettings(**sections["stream"]),
        log=LogSettings(**sections["log"]),
        auth=AuthSettings(**sections["auth"]),
        limits=LimitSettings(**sections["limits"]),
        cors=CorsSettings(**sections["cors"]),
        hub=HubSettings(**sections["hub"]),
        publish=PublishSettings(**sections["publish"]),
        routes=routes,
        route_options=route_options,
        stages=stages,
    )
    validate(settings, serving=serving)
    return settings


def validate(settings: Settings, *, serving: bool = False) -> None:
    """The checks that span several settings, or need more than the value: CORS, the routes and
    their stages (the filter pipeline is built once), and the authentication keys."""
    from filters import Pipeline

    from .auth import load_keys

    event_types = {route.event_type for route in settings.routes}
    for event_type in settings.publish.event_types:
        if event_type not in event_types:
            raise ConfigError(
                "publish.event_types", event_type, "a route's event type (" + ", ".join(sorted(event_types)) + ")"
            )
    if settings.workers > 1 and not settings.hub.url:
        raise ConfigError(
            "workers", str(settings.workers), "1 without hub.url (the workers share one hub: one change stream)"
        )
    if settings.workers > 1 and settings.port == 0:
        raise ConfigError("port", "0", "a fixed port when workers > 1 (they listen on the same one)")
    if "*" in settings.cors.allow_origins and settings.cors.allow_credentials:
        raise ConfigError("cors.allow_origins", "*", "explicit origins when cors.allow_credentials is true")
    try:
        Pipeline(settings.routes, stages=settings.load_stages())
    except FilterError as exc:
        raise ConfigError("routes", str(exc), "valid filter rules") from exc
    auth = settings.auth
    # Without serving, a JWKS URL alone is not fetched (its form is checked by its parser); beside
    # another key source it is refused either way.
    if serving or auth.jwt_secret or auth.jwt_public_key_file or auth.jwks_file:
        load_keys(auth)


# --- the reference ------------------------------------------------------------------------------


def reference_table() -> str:
    """The Markdown table of every scalar setting, as ``docs/configuration.md`` shows it."""
    lines = [
        "| file key | environment | flag | default | allowed | what it does |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for declaration in DECLARATIONS.values():
        default = "none (secret)" if declaration.secret and not declaration.default else shown(declaration.default)
        flag = f"`{declaration.flag}`" if declaration.flag else ""
        lines.append(
            table_row(
                f"`{declaration.key}`",
                f"`{declaration.env}`",
                flag,
                default,
                declaration.parser.expected,
                declaration.help,
            )
        )
    return "\n".join(lines)
