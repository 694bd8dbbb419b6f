"""Every exception changesync raises on purpose.

    ChangesyncError
    ├── ConfigError (also ValueError)          bad configuration: names the key, the value, what was expected
    ├── AuthenticationError                    a request carries no valid token (answered with 401)
    ├── JwksUnavailableError                   the JWKS at auth.jwks_url cannot be fetched now (``cause``)
    ├── SendTimeoutError (also TimeoutError)   a client stopped reading its stream (stream.send_timeout_s)
    ├── ResumeFailedError                      a client's position cannot be caught up (``reason``, sent in a RESYNC)
    ├── EmbeddedServerError                    the embedded database of ``changesync demo`` is missing or did not start
    ├── HubUnavailableError                    the hub cannot take or give events now (no position yet, Redis down)
    ├── LeadershipLostError                    this process no longer holds the watcher's lease, or Redis moved on
    ├── PublishRefusedError                    a published event is refused (``status``, ``reason``: the 4xx answer)
    └── SourceError                            MongoDB could not do what was asked
        ├── SourceUnavailableError             no connection: server selection failed, the network broke
        ├── UndecodableError                   the server sent data that cannot be decoded (InvalidBSON)
        └── ServerError                        the server refused an operation (``code``, ``details``)
            ├── NotAReplicaSetError            a standalone server: change streams need a replica set (40573)
            ├── PositionLostError              a change stream position can no longer be used
            │   ├── HistoryLostError           too old: it fell off the oplog (136, 286)
            │   └── UnknownPositionError       never this deployment's, or unusable (260, 280)
            └── TokenRejectedError             the server cannot read the value as a resume token (9, 14)

PyMongo's exceptions become ``SourceError``s in one place, ``changesync.mongo.mapped_errors``: no
module above it imports PyMongo to read an error. Errors of the filter pipeline live in
``filters.errors`` (``FilterError``): ``filters`` is a separate package that knows nothing of this one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ChangesyncError(Exception):
    """Base class of every error changesync raises on purpose."""


class ConfigError(ChangesyncError, ValueError):
    """A setting is missing, malformed or out of range.

    ``key`` is the name the operator wrote (a file key, an environment variable or a flag).
    """

    def __init__(self, key: str, value: Any, expected: str) -> None:
        self.key = key
        self.value = value
        self.expected = expected
        super().__init__(f"{key}: expected {expected}, got {value!r}")


class AuthenticationError(ChangesyncError):
    """No valid token: answered with 401 and ``message``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class JwksUnavailableError(ChangesyncError):
    """The identity provider's JWKS could not be fetched, or is no usable JWKS; ``cause`` says why in a few words."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


class SendTimeoutError(ChangesyncError, TimeoutError):
    """A send to a client did not return within ``timeout_s``: its socket buffers are full."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        super().__init__(f"a send to the client blocked for more than {timeout_s:g} s")


class ResumeFailedError(ChangesyncError):
    """A client's position cannot be caught up; ``reason`` (a ``changesync.resync`` reason) is sent in a RESYNC."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EmbeddedServerError(ChangesyncError):
    """The embedded server is not installed or did not start."""


class HubUnavailableError(ChangesyncError):
    """The hub cannot take or give events now; ``cause`` says why (for a 503)."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


class LeadershipLostError(ChangesyncError):
    """The watcher must stop: the lease is no longer ours (``fenced``), or Redis's position or epoch
    is not the one this process published last (``diverged``, ``epoch``)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


class PublishRefusedError(ChangesyncError):
    """An event a service published is refused: ``status`` and ``reason`` make the 4xx answer."""

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.status = status
        self.reason = reason
        self.detail = detail


class SourceError(ChangesyncError):
    """MongoDB could not do what was asked. ``cause`` is a one-line account an operator can act on."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


class SourceUnavailableError(SourceError):
    """The deployment cannot be reached: no server was selected in time, or the connection broke."""


class UndecodableError(SourceError):
    """The server sent a reply that cannot be decoded (for example an invalid BSON document)."""


class ServerError(SourceError):
    """The server answered with an error ``code``; ``details`` is its reply, when there is one."""

    def __init__(self, cause: str, *, code: int | None, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(cause)
        self.code = code
        self.details = details


class NotAReplicaSetError(ServerError):
    """The server is a standalone ``mongod``: change streams need a replica set (even of one node) or mongos."""


class PositionLostError(ServerError):
    """A change stream position (a resume token or start time) can no longer be used."""


class HistoryLostError(PositionLostError):
    """The position fell off the oplog: the changes after it are gone."""


class UnknownPositionError(PositionLostError):
    """The position was never in this deployment's history, or the stream cannot resume from it."""


class TokenRejectedError(ServerError):
    """The server cannot parse the value as a resume token at all."""
