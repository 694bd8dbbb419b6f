"""Exceptions raised by changesync.

    ChangesyncError
    ├── ConfigError (also ValueError)         bad configuration: names the key, the value, what was expected
    ├── SendTimeoutError (also TimeoutError)  a client stopped reading its stream (send_timeout_s)
    └── SourceError                           MongoDB cannot serve the change stream we need
        └── NotAReplicaSetError               the deployment has no change streams (standalone server)

Errors of the filter pipeline live in ``filters.errors`` (``FilterError``): ``filters`` is a
separate package that knows nothing of this one.
"""

from __future__ import annotations

from typing import Any


class ChangesyncError(Exception):
    """Base class of every error changesync raises on purpose."""


class ConfigError(ChangesyncError, ValueError):
    """A setting is missing, malformed or out of range."""

    def __init__(self, key: str, value: Any, expected: str) -> None:
        self.key = key
        self.value = value
        self.expected = expected
        super().__init__(f"{key}: expected {expected}, got {value!r}")


class SendTimeoutError(ChangesyncError, TimeoutError):
    """A send to a client did not return within ``timeout_s``: its socket buffers are full."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        super().__init__(f"a send to the client blocked for more than {timeout_s:g} s")


class SourceError(ChangesyncError):
    """The MongoDB deployment cannot serve the change stream."""


class NotAReplicaSetError(SourceError):
    """Change streams need a replica set or a sharded cluster."""
