"""How a client joins a flow: live at once, then a replay, a catch-up from history, or a snapshot.

The promise: a client that reconnects with its last event id gets every event it missed, once,
in order, or an explicit ``RESYNC``; never a silent gap.

Every join subscribes first, before the response starts, so nothing published from then on can be
missed. While the join's own work runs (reading a snapshot, catching up from MongoDB's history),
the subscriber is *held*: live frames queue up, and are released after it.

- **Replay**: the last event id is still in the hub's history of the flow; what follows it is
  taken in the same step as the subscription and sent ahead of the live frames.
- **Catch-up**: otherwise a temporary change stream starts after that position, narrowed to the
  flow. It delivers what the live stream published before the client joined (the hub's ``Clock``
  at subscribe time decides) and stops at the first change published after. That change and
  everything later is already queued. Positions sent twice are dropped as a safety net.
- **Snapshot**: see ``changesync.delivering.snapshot``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..codec import decode_token, parse_event_id
from ..errors import ResumeFailedError, SourceError, TokenRejectedError
from ..frames import Frame, comment, resync_frame
from ..hub import Clock, Hub
from ..metrics import Metrics
from ..resync import reason_for_catch_up_error
from .broadcast import Subscriber
from .snapshot import Snapshots

logger = logging.getLogger(__name__)


class HistoryReader(Protocol):
    """The history path (``changesync.producing.history.History``)."""

    def frames_after(
        self, token: Mapping[str, Any], flow_id: str, *, until: Clock, id_suffix: str = ""
    ) -> AsyncIterator[Frame]: ...


@dataclass(frozen=True, slots=True)
class Join:
    """What a request asked for."""

    flow_id: str
    types: frozenset[str] | None = None
    last_event_id: str | None = None
    snapshot: bool | None = None
    """``None``: the configured default for a first connection."""


@dataclass(slots=True)
class Plan:
    """What the response will do before it goes live."""

    resync_reason: str | None = None
    backlog: list[Frame] | None = None
    catch_up_from: dict[str, Any] | None = None
    catch_up_id_suffix: str = ""
    clock: Clock | None = None
    snapshot: bool = False
    snapshot_after_resync: bool = False
    """A client that must discard its state gets a snapshot unless it asked for none."""


class Joins:
    def __init__(
        self,
        hub: Hub,
        history: HistoryReader,
        snapshots: Snapshots,
        *,
        snapshot_on_connect: bool,
        catch_up_timeout_s: float,
        publishable: frozenset[str] = frozenset(),
        metrics: Metrics | None = None,
    ) -> None:
        """``publishable``: the event types back-end services may publish (not in the oplog)."""
        self.hub = hub
        self.metrics = Metrics() if metrics is None else metrics
        self.publishable = publishable
        self.history = history
        self.snapshots = snapshots
        self.snapshot_on_connect = snapshot_on_connect
        self.catch_up_timeout_s = catch_up_timeout_s

    async def join(self, request: Join, *, subject: str = "") -> tuple[Subscriber, Plan]:
        """Subscribe now (the subscription is live when this returns) and plan the rest."""
        default_snapshot = self.snapshot_on_connect if request.snapshot is None else request.snapshot
        plan = Plan(snapshot_after_resync=default_snapshot)
        resume_from = token = None
        if request.last_event_id:
            try:
                resume_from = parse_event_id(request.last_event_id)
                token = decode_token(resume_from.position)
            except ValueError:
                plan.resync_reason = "invalid-id"
                plan.snapshot = default_snapshot
        else:
            plan.snapshot = default_snapshot
        if resume_from is None or token is None:
            subscription = await self.hub.subscribe(request.flow_id, request.types, held=plan.snapshot, subject=subject)
            return subscription.subscriber, plan
        # Held in both cases: a backlog is sent from the prologue, not queued (it may be longer than a queue).
        subscription = await self.hub.subscribe(
            request.flow_id, request.types, held=True, subject=subject, replay_after=resume_from
        )
        plan.backlog = subscription.backlog
        if plan.backlog is not None:
            return subscription.subscriber, plan
        wanted = self.publishable if request.types is None else self.publishable & request.types
        if wanted and await self.hub.may_have_lost_published(request.flow_id, resume_from):
            # The oplog has the database writes only: published events the client missed are gone.
            plan.resync_reason = "history-lost"
            plan.snapshot = default_snapshot
            return subscription.subscriber, plan
        plan.catch_up_from = token
        plan.catch_up_id_suffix = str(resume_from).removeprefix(resume_from.position)
        plan.clock = subscription.clock
        plan.snapshot = bool(request.snapshot)
        return subscription.subscriber, plan

    async def prologue(self, subscriber: Subscriber, plan: Plan) -> AsyncIterator[bytes]:
        """The frames sent before the subscriber goes live; releases it at the end."""
        if plan.backlog:
            for frame in plan.backlog:
                if subscriber.wants(frame.event_type):
                    yield subscriber.encoded(frame)
        if plan.catch_up_from is not None and plan.clock is not None:
            try:
                async for data in self._catch_up(subscriber, plan.catch_up_from, plan.clock, plan.catch_up_id_suffix):
                    yield data
            except ResumeFailedError as exc:
                logger.info("client of flow %s cannot resume (%s)", subscriber.flow_id, exc.reason)
                plan.resync_reason = exc.reason
                plan.snapshot = plan.snapshot or plan.snapshot_after_resync
        if plan.resync_reason is not None:
            self.metrics.labelled(self.metrics.resyncs, plan.resync_reason).inc()
            yield resync_frame(subscriber.flow_id, plan.resync_reason, event_id=self.hub.position).data
        if plan.snapshot:
            yield await self.snapshots.take(subscriber)
        subscriber.release()

    async def _catch_up(
        self, subscriber: Subscriber, token: dict[str, Any], clock: Clock, id_suffix: str
    ) -> AsyncIterator[bytes]:
        sent: set[str] = set()
        try:
            async with asyncio.timeout(self.catch_up_timeout_s):
                async for frame in self.history.frames_after(
                    token, subscriber.flow_id, until=clock, id_suffix=id_suffix
                ):
                    if subscriber.wants(frame.event_type):
                        sent.add(frame.token)
                        yield subscriber.encoded(frame)
        except TimeoutError:
            raise ResumeFailedError("catch-up-timeout") from None
        except SourceError as exc:
            reason = reason_for_catch_up_error(exc)
            if isinstance(exc, TokenRejectedError):
                logger.info("a client of flow %s sent an id the server rejects (%s)", subscriber.flow_id, exc.cause)
            elif reason == "catch-up-failed":
                logger.warning("catch-up for flow %s failed: %s", subscriber.flow_id, exc.cause)
            raise ResumeFailedError(reason) from None
        if sent:
            subscriber.discard(lambda frame: frame.is_change and frame.token in sent)


def opening_frame(retry_ms: int) -> bytes:
    """The retry hint and a comment, sent at once so the client knows the stream is live."""
    return b"retry: " + str(retry_ms).encode("ascii") + b"\n" + comment("connected")
