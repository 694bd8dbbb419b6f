"""The seam between producing frames and delivering them.

The producing side (one watcher per deployment) calls ``start``, ``publish``, ``idle`` and
``reset``; back-end services' events come in through ``publish_event``. The delivering side
(every process that serves SSE) calls ``subscribe``, ``unsubscribe`` and ``barrier``, and reads
``position``. ``LocalHub`` is the in-process hub: both sides in one process, no network in between.
Each hub delivers to the subscribers of its own process through its ``broker``.

The hub numbers what it publishes (a sequence number within its *epoch*, which changes whenever
its history may have been lost) and hands out ids ``<position>~<epoch>.<seq>``
(``changesync.codec.EventId``): a client that comes back with one resumes from the hub's history,
on any process of the deployment, or from the oplog at ``position``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..codec import EventId
from ..delivering.broadcast import Broker, Subscriber
from ..frames import Draft, Frame
from .clock import Clock, ClusterTime


@dataclass(frozen=True, slots=True)
class Subscription:
    """A new subscriber, live from now on, and what its join needs to know.

    ``backlog``: the flow's frames after the requested position when the hub's history reaches
    back to it (``None`` otherwise). ``clock``: where the live stream was when the subscriber
    joined; what was published after it is queued to the subscriber.
    """

    subscriber: Subscriber
    backlog: list[Frame] | None
    clock: Clock


class Sink(Protocol):
    """The producing side: what the deployment's watcher publishes (``LocalHub``, ``RedisPublisher``)."""

    def start(self, position: str | None, start_time: ClusterTime | None) -> None:
        """The live stream (re)opened at ``position``; at ``start_time`` when it starts afresh."""

    def publish(self, position: str, cluster_time: ClusterTime | None, drafts: Sequence[Draft]) -> None:
        """The change at ``position`` was produced, with one draft per flow it concerns (maybe none)."""

    def idle(self, position: str | None) -> None:
        """An empty poll returned at ``position``: the stream is caught up."""

    def reset(self, reason: str) -> None:
        """Every client must reload (a ``RESYNC`` with ``reason``); history no longer reaches back."""

    async def drain(self) -> None:
        """Until what was published is on its way: the watcher waits here between batches of changes."""


class Hub(Protocol):
    """The delivering side, in every process that serves SSE (``LocalHub``, ``RedisHub``)."""

    broker: Broker
    """The subscribers of this process."""

    @property
    def position(self) -> str:
        """The id after the latest change or empty poll: a safe id for an idle client ("" before the
        stream's first position)."""
        ...

    async def publish_event(self, draft: Draft) -> str:
        """Publish an event that is not a database write (``POST /flows/{flowId}/events``); its id.

        Raises ``HubUnavailableError`` while the hub cannot take it (no stream position yet, no Redis).
        """
        ...

    # --- the delivering side ----------------------------------------------------------------

    async def subscribe(
        self,
        flow_id: str,
        types: frozenset[str] | None,
        *,
        held: bool,
        subject: str,
        replay_after: EventId | None = None,
    ) -> Subscription:
        """Subscribe to a flow; with ``replay_after``, also take its history after that id."""
        ...

    async def may_have_lost_published(self, flow_id: str, after: EventId) -> bool:
        """Whether a client at ``after`` may have missed published events of the flow that the hub no
        longer holds (the oplog has only database writes)."""
        ...

    def unsubscribe(self, subscriber: Subscriber) -> None: ...

    def barrier(self, after: ClusterTime | None) -> asyncio.Future[None]:
        """A future that resolves once every change committed at or before ``after`` was published
        (and so queued to the subscribers that were held meanwhile)."""
        ...


__all__ = ["Clock", "ClusterTime", "Hub", "Sink", "Subscription"]
