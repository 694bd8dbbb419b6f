"""Logging set-up: one ``dictConfig`` call; JSON lines when stderr is not a terminal."""

from __future__ import annotations

import datetime
import logging
import logging.config
import re
import sys
import time
from typing import Any

import orjson

from .settings import LogSettings

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is worth emitting.
STANDARD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


# A token in a URL (the access_token query parameter) or an Authorization header value.
SECRET_PATTERN = re.compile(r"(access_token=|[Bb]earer\s+)[^&\s\"']+")


def redact(text: str) -> str:
    return SECRET_PATTERN.sub(r"\1***", text)


class RedactSecrets(logging.Filter):
    """Never let a token reach a log line, whoever logs it (uvicorn logs request lines with queries)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in STANDARD_ATTRIBUTES:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(settings: LogSettings) -> None:
    use_json = settings.format == "json" or (settings.format == "auto" and not sys.stderr.isatty())
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "json": {"()": JSONFormatter},
                "text": {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"},
            },
            "filters": {"redact": {"()": RedactSecrets}},
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "stream": "ext://sys.stderr",
                    "formatter": "json" if use_json else "text",
                    "filters": ["redact"],
                }
            },
            "loggers": {
                "changesync": {"level": settings.level, "handlers": ["stderr"], "propagate": False},
                "uvicorn": {"level": settings.level, "handlers": ["stderr"], "propagate": False},
                "uvicorn.access": {"level": "WARNING", "handlers": ["stderr"], "propagate": False},
            },
        }
    )


class RateLimitedLog:
    """Logs a recurring condition at most once per interval and key, with the count suppressed."""

    def __init__(self, logger: logging.Logger, *, interval_s: float = 10.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        suppressed = self._suppressed.pop(key, 0)
        self._last[key] = now
        text = message % args if args else message
        if suppressed:
            self.logger.warning("%s (%d similar suppressed)", text, suppressed)
        else:
            self.logger.warning("%s", text)
