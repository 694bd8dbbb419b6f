"""How setting values are read: one parser per kind of value, which also says what it allows.

A parser turns a value from the TOML file (any TOML type) or the environment (a string) into the
setting's value, or raises ``ConfigError`` naming the key the operator wrote. ``expected``
describes the values it allows, for errors and for the configuration reference.
"""

from __future__ import annotations

import difflib
import json
import re
import urllib.parse
from collections.abc import Iterable
from typing import Any

from .errors import ConfigError

# MongoDB forbids these characters in database names on every platform.
DATABASE_NAME_PATTERN = re.compile(r'[^/\\. "$*<>:|?\x00]{1,63}')
ORIGIN_PATTERN = re.compile(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?")
# Where plain http:// is good enough for keys: this machine (a sidecar, a test server), nothing on a network.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
# HS256 keys shorter than the hash output are weak (RFC 7518 section 3.2 asks for at least 256 bits).
MIN_SECRET_LENGTH = 32


def redact_uri(uri: str) -> str:
    """The URI with its password replaced by ``***``, safe to log."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class Parser:
    expected = "a value"

    def __call__(self, key: str, value: Any) -> Any:
        raise NotImplementedError

    def fail(self, key: str, value: Any) -> ConfigError:
        return ConfigError(key, value, self.expected)


class Text(Parser):
    expected = "a non-empty string"

    def __call__(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, value)
        return value


class Uri(Parser):
    expected = "a URI starting with mongodb:// or mongodb+srv://"

    def __call__(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not value.startswith(("mongodb://", "mongodb+srv://")):
            raise self.fail(key, redact_uri(value) if isinstance(value, str) else value)
        return value


class RedisUrl(Parser):
    expected = "a URL starting with redis://, rediss:// or unix:// (or empty: no hub)"

    def __call__(self, key: str, value: Any) -> str:
        if value == "":
            return ""
        if not isinstance(value, str) or not value.startswith(("redis://", "rediss://", "unix://")):
            raise self.fail(key, redact_uri(value) if isinstance(value, str) else value)
        return value


class HttpsUrl(Parser):
    """A URL fetched over the network: ``https://``, or plain ``http://`` to a ``LOOPBACK_HOSTS`` host."""

    expected = "an https:// URL (http:// only for 127.0.0.1, ::1 or localhost), or empty"

    def __call__(self, key: str, value: Any) -> str:
        if value == "":
            return ""
        if not isinstance(value, str):
            raise self.fail(key, value)
        if not is_https_or_loopback(value):
            try:
                shown = redact_uri(value)
            except ValueError:  # not even a URL: whatever precedes an "@" may be a password
                shown = "…@" + value.rpartition("@")[2] if "@" in value else value
            raise self.fail(key, shown)
        return value


def is_https_or_loopback(url: str) -> bool:
    """Whether ``url`` is ``https://`` with a host, or ``http://`` to a host in ``LOOPBACK_HOSTS``."""
    try:
        parts = urllib.parse.urlsplit(url)
        host, _ = parts.hostname, parts.port
    except ValueError:  # a malformed IPv6 address or port
        return False
    if not host:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and host in LOOPBACK_HOSTS)


class Names(Parser):
    """A list of upper-case names (a TOML list, or comma-separated in the environment)."""

    expected = "upper-case names such as LOG_STREAM (a list, or comma-separated)"
    pattern = re.compile(r"[A-Z][A-Z0-9_]{0,63}")

    def __call__(self, key: str, value: Any) -> tuple[str, ...]:
        items = [item.strip() for item in value.split(",")] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
            raise self.fail(key, value)
        names = tuple(item for item in items if item)
        for name in names:
            if not self.pattern.fullmatch(name):
                raise ConfigError(key, name, "an upper-case name such as LOG_STREAM")
        return names


class DatabaseName(Parser):
    expected = 'a MongoDB database name (1-63 characters, none of /\\. "$*<>:|?)'

    def __call__(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not DATABASE_NAME_PATTERN.fullmatch(value):
            raise self.fail(key, value)
        return value


class Integer(Parser):
    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self.expected = f"an integer from {low} to {high}"

    def __call__(self, key: str, value: Any) -> int:
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise self.fail(key, value) from None
        if isinstance(value, bool) or not isinstance(value, int) or not self.low <= value <= self.high:
            raise self.fail(key, value)
        return value


class Number(Parser):
    unit = ""

    def __init__(self, above: float = 0) -> None:
        self.above = above
        self.expected = f"a number{self.unit} > {above:g}"

    def __call__(self, key: str, value: Any) -> float:
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise self.fail(key, value) from None
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > self.above:
            raise self.fail(key, value)
        if value != value or value == float("inf"):
            raise ConfigError(key, value, f"a finite number{self.unit}")
        return float(value)


class Seconds(Number):
    unit = " of seconds"


class Boolean(Parser):
    expected = "true or false"

    def __call__(self, key: str, value: Any) -> bool:
        if isinstance(value, str) and value.lower() in {"true", "false", "1", "0"}:
            return value.lower() in {"true", "1"}
        if not isinstance(value, bool):
            raise self.fail(key, value)
        return value


class Choice(Parser):
    def __init__(self, *choices: str, upper: bool = False) -> None:
        self.choices, self.upper = choices, upper
        self.expected = "one of " + ", ".join(choices)

    def __call__(self, key: str, value: Any) -> str:
        if isinstance(value, str):
            value = value.upper() if self.upper else value.lower()
        if value not in self.choices:
            raise self.fail(key, value)
        return str(value)


class Secret(Parser):
    expected = f"a secret of at least {MIN_SECRET_LENGTH} characters"

    def __call__(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
            raise self.fail(key, "<hidden>" if value else "<empty>")
        return value


class JsonQuery(Parser):
    expected = "a MongoDB query as a JSON object (or a TOML table)"

    def __call__(self, key: str, value: Any) -> str:
        text = json.dumps(value) if isinstance(value, dict) else value
        try:
            parsed = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict) or not parsed:
            raise self.fail(key, value)
        return str(text)


class Origins(Parser):
    expected = "origins such as https://app.example.com (a list, or comma-separated)"

    def __call__(self, key: str, value: Any) -> tuple[str, ...]:
        items = [item.strip() for item in value.split(",")] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
            raise self.fail(key, value)
        origins = tuple(item.rstrip("/") for item in items if item)
        for origin in origins:
            if origin != "*" and not ORIGIN_PATTERN.fullmatch(origin):
                raise ConfigError(key, origin, "an origin: scheme://host[:port], no path")
        return origins


def did_you_mean(name: str, known: Iterable[str], *, what: str = "setting", prefix: str = "") -> str:
    """What was expected instead of an unknown ``name``: the closest known names, if any are close.

    ``prefix``, shared by every name (``CHANGESYNC_``), is left out of the comparison.
    """
    candidates = {candidate.removeprefix(prefix).lower(): candidate for candidate in known}
    target = name.removeprefix(prefix).lower()
    scored = sorted(
        ((difflib.SequenceMatcher(None, target, short).ratio(), full) for short, full in candidates.items()),
        reverse=True,
    )
    close = [full for score, full in scored[:3] if score >= 0.7 and score >= scored[0][0] - 0.05]
    if close:
        return f"a known {what}; did you mean " + " or ".join(close) + "?"
    return f"a known {what} (see docs/configuration.md)"


def shown(value: Any) -> str:
    """A default value as the configuration reference shows it."""
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if value in ("", (), [], None):
        return "none"
    if isinstance(value, (list, tuple)):
        return "`" + json.dumps(list(value)) + "`"
    return f"`{value}`"


def table_row(*cells: str) -> str:
    """One row of a Markdown table; ``|`` inside a cell is escaped."""
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
