"""Why a client must resync: every ``RESYNC`` reason, and what leads to it, in one table.

``REASONS`` is the reference (``docs/protocol.md`` lists it, and a test checks that it does).
Changes of the stream and errors of a catch-up map to reasons here and nowhere else.
"""

from __future__ import annotations

from typing import Final

from .errors import HistoryLostError, SourceError, TokenRejectedError, UnknownPositionError

REASONS: Final[dict[str, tuple[bool, str]]] = {
    # reason: (resumable, what happened)
    "slow-consumer": (True, "the client fell behind and its queue overflowed; the stream ends"),
    "token-expired": (True, "the client's token expired; the stream ends"),
    "interrupted": (True, "the hub's feed of the flow was interrupted (Redis lost data, or cut this process off)"),
    "access-revoked": (False, "the subject may no longer read the flow; the stream ends"),
    "invalid-id": (False, "the Last-Event-ID is not one of ours"),
    "unknown-position": (False, "the position was never in this deployment's history"),
    "history-lost": (False, "the position has left the oplog, or the live stream lost its own"),
    "catch-up-timeout": (False, "catching up from the oplog took longer than stream.catch_up_timeout_s"),
    "catch-up-failed": (False, "catching up from the oplog failed (the database could not be read)"),
    "event-skipped": (False, "a change the server cannot deliver was stepped over"),
    "collection-drop": (False, "a watched collection was dropped"),
    "collection-rename": (False, "a watched collection was renamed, or another was renamed onto it"),
    "database-dropped": (False, "the watched database was dropped"),
    "invalidated": (False, "the server invalidated the change stream"),
}
RESUMABLE_REASONS: Final = frozenset(reason for reason, (resumable, _) in REASONS.items() if resumable)
"""The client reconnects with its ``Last-Event-ID`` and gets everything it missed: nothing is lost."""

OPERATION_REASONS: Final = {
    "drop": "collection-drop",
    "rename": "collection-rename",
    "dropDatabase": "database-dropped",
    "invalidate": "invalidated",
}
"""Change stream operations after which every client of the database must reload."""


def reason_for_operation(operation: str) -> str:
    """The reason a reset operation (``drop``, ``rename``, ``dropDatabase``, ``invalidate``) gives."""
    return OPERATION_REASONS[operation]


def reason_for_catch_up_error(exc: SourceError) -> str:
    """The reason a client gets when catching it up from the oplog failed with ``exc``."""
    if isinstance(exc, HistoryLostError):
        return "history-lost"
    if isinstance(exc, UnknownPositionError):
        return "unknown-position"
    if isinstance(exc, TokenRejectedError):
        # The id decoded, but the server cannot read it as a token: a client's garbage.
        return "invalid-id"
    return "catch-up-failed"


def reference_table() -> str:
    """The Markdown table of every reason, as ``docs/protocol.md`` shows it."""
    lines = ["| reason | resumable | what happened |", "| --- | --- | --- |"]
    lines += [
        f"| `{reason}` | {'yes' if resumable else 'no'} | {what} |" for reason, (resumable, what) in REASONS.items()
    ]
    return "\n".join(lines)
