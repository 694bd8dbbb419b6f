"""Where the live stream is, as the hub has seen it, and barriers that wait for it to get somewhere."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

ClusterTime = tuple[int, int]


@dataclass(slots=True)
class Clock:
    """What a client that joins now has not yet missed.

    ``time`` is the cluster time of the latest published change (or of the stream's start), and
    ``positions_at_time`` the changes already published at exactly that time: a transaction's
    changes share one cluster time and may arrive in several batches.
    """

    time: ClusterTime | None = None
    positions_at_time: set[str] = field(default_factory=set)

    def copy(self) -> Clock:
        return Clock(self.time, set(self.positions_at_time))

    def advance(self, time: ClusterTime | None, position: str) -> None:
        if time is not None:
            if time != self.time:
                self.time = time
                self.positions_at_time = set()
            self.positions_at_time.add(position)

    def has_published(self, time: ClusterTime | None, position: str) -> bool:
        """Whether a change at ``time`` with ``position`` was published before this clock was read."""
        if self.time is None or time is None:
            return False
        return time < self.time or (time == self.time and position in self.positions_at_time)


# Idle notices after a barrier was created that prove the stream caught up: the first may come from
# a poll that was already under way, and missed what was committed meanwhile; the second cannot.
IDLE_NOTICES_TO_SETTLE = 2


class Barriers:
    """Futures that resolve once every change committed at or before a cluster time was published.

    That is known when a change with a later cluster time is published, or when the stream has
    been idle twice since the barrier was made (see ``IDLE_NOTICES_TO_SETTLE``).
    """

    __slots__ = ("_idle_notices", "_pending")

    def __init__(self, *, idle_notices: int = IDLE_NOTICES_TO_SETTLE) -> None:
        self._idle_notices = idle_notices
        # [after, idle notices still needed, future]
        self._pending: list[tuple[ClusterTime | None, list[int], asyncio.Future[None]]] = []

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, after: ClusterTime | None, clock: Clock) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        if after is not None and clock.time is not None and clock.time > after:
            future.set_result(None)
        else:
            self._pending.append((after, [self._idle_notices], future))
        return future

    def advanced(self, clock: Clock) -> None:
        """The clock moved: settle the barriers it passed."""
        if self._pending:
            self._settle(lambda after, _: after is not None and clock.time is not None and clock.time > after)

    def idle(self) -> None:
        """The stream came back empty: it is caught up with everything committed before that poll began."""
        if self._pending:

            def caught_up(_: ClusterTime | None, needed: list[int]) -> bool:
                needed[0] -= 1
                return needed[0] <= 0

            self._settle(caught_up)

    def _settle(self, passed: Callable[[ClusterTime | None, list[int]], bool]) -> None:
        pending = []
        for after, needed, future in self._pending:
            if future.done():
                continue
            if passed(after, needed):
                future.set_result(None)
            else:
                pending.append((after, needed, future))
        self._pending = pending
