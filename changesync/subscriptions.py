"""How a client joins a flow: live at once, then a replay, a catch-up from history, or a snapshot.

The promise: a client that reconnects with its last event id gets every event it missed, once,
in order, or an explicit ``RESYNC``; never a silent gap.

Every join subscribes first, synchronously, before the response starts, so nothing published
from then on can be missed. While the join's own work runs (reading a snapshot, catching up from
MongoDB's history), the subscriber is *held*: live deliveries queue up, and are released after it.

- **Replay**: the last event id is still in the flow's replay buffer; what follows it is taken in
  the same synchronous step as the subscription and sent ahead of the live deliveries.
- **Catch-up**: otherwise a temporary change stream starts after that position, narrowed to the
  flow. It delivers what the live stream dispatched before the client joined (the ``Clock`` read
  at subscribe time decides) and stops at the first change the live stream dispatched after. That
  change and everything later is already queued. Positions sent twice are dropped as a safety net.
- **Snapshot**: reads the flow's documents with majority read concern. It then waits until the
  live stream has dispatched everything up to the read's cluster time, and folds the changes
  queued meanwhile into the documents. Those changes are replaced by the snapshot; the snapshot's
  id is the live position.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from pymongo.errors import OperationFailure, PyMongoError

from filters import ChangeEvent, Pipeline

from .broadcast import Broker, Delivery, Subscriber
from .codec import decode_token, encode_token, routable_flow_id, to_plain
from .dispatch import Clock, Dispatcher, cluster_time_of
from .events import SNAPSHOT, comment_frame, frame, resync_frame
from .settings import RouteOptions, StreamSettings
from .source import DATA_OPERATIONS, POSITION_LOST_CODES, ChangeSource

logger = logging.getLogger(__name__)

# History codes that mean "too old" rather than "never ours".
HISTORY_LOST_CODES = {136, 286}
# The server could not parse the token as one: FailedToParse, TypeMismatch.
TOKEN_REJECTED_CODES = {9, 14}


class ResumeFailedError(Exception):
    """A client's position cannot be caught up; ``reason`` is sent in a RESYNC."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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
    backlog: list[Delivery] | None = None
    catch_up_from: dict[str, Any] | None = None
    clock: Clock | None = None
    snapshot: bool = False
    snapshot_after_resync: bool = False
    """A client that must discard its state gets a snapshot unless it asked for none."""


class Subscriptions:
    def __init__(
        self,
        *,
        broker: Broker,
        dispatcher: Dispatcher,
        source: ChangeSource,
        pipeline: Pipeline,
        route_options: Mapping[str, RouteOptions],
        settings: StreamSettings,
    ) -> None:
        self.broker = broker
        self.dispatcher = dispatcher
        self.source = source
        self.pipeline = pipeline
        self.route_options = route_options
        self.settings = settings

    def join(self, request: Join, *, subject: str = "") -> tuple[Subscriber, Plan]:
        """Subscribe now (synchronously: the subscription is live when this returns) and plan the rest."""
        default_snapshot = self.settings.snapshot_on_connect if request.snapshot is None else request.snapshot
        plan = Plan(snapshot_after_resync=default_snapshot)
        if request.last_event_id:
            try:
                token = decode_token(request.last_event_id)
            except ValueError:
                plan.resync_reason = "invalid-id"
                plan.snapshot = default_snapshot
            else:
                plan.backlog = self.dispatcher.replay.after(request.flow_id, request.last_event_id)
                if plan.backlog is not None:
                    # Sent from the prologue, not queued: a backlog may be longer than a live queue.
                    return self.broker.subscribe(request.flow_id, request.types, held=True, subject=subject), plan
                plan.catch_up_from = token
                plan.clock = self.dispatcher.clock.copy()
                plan.snapshot = bool(request.snapshot)
        else:
            plan.snapshot = default_snapshot
        held = plan.catch_up_from is not None or plan.snapshot
        return self.broker.subscribe(request.flow_id, request.types, held=held, subject=subject), plan

    async def prologue(self, subscriber: Subscriber, plan: Plan) -> AsyncIterator[bytes]:
        """The frames sent before the subscriber goes live; releases it at the end."""
        if plan.backlog:
            for delivery in plan.backlog:
                if subscriber.wants(delivery.event_type):
                    yield delivery.frame
        if plan.catch_up_from is not None and plan.clock is not None:
            try:
                async for data in self._catch_up(subscriber, plan.catch_up_from, plan.clock):
                    yield data
            except ResumeFailedError as exc:
                logger.info("client of flow %s cannot resume (%s)", subscriber.flow_id, exc.reason)
                plan.resync_reason = exc.reason
                plan.snapshot = plan.snapshot or plan.snapshot_after_resync
        if plan.resync_reason is not None:
            yield resync_frame(subscriber.flow_id, plan.resync_reason, event_id=self.dispatcher.position)
        if plan.snapshot:
            yield await self._snapshot(subscriber)
        subscriber.release()

    # --- catch-up from history ----------------------------------------------------------------

    async def _catch_up(self, subscriber: Subscriber, token: dict[str, Any], clock: Clock) -> AsyncIterator[bytes]:
        sent: set[str] = set()
        try:
            async with asyncio.timeout(self.settings.catch_up_timeout_s):
                async with self.source.history(token, subscriber.flow_id) as stream:
                    while True:
                        change = await stream.try_next()
                        if change is None:
                            break
                        position = encode_token(change["_id"])
                        if not clock.has_dispatched(cluster_time_of(change), position):
                            break
                        operation = change.get("operationType")
                        if operation not in DATA_OPERATIONS:
                            raise ResumeFailedError(
                                "database-dropped" if operation == "dropDatabase" else f"collection-{operation}"
                            )
                        for flow_id, delivery in self.dispatcher.render(change, position, live=False):
                            if flow_id == subscriber.flow_id and subscriber.wants(delivery.event_type):
                                sent.add(position)
                                yield delivery.frame
        except TimeoutError:
            raise ResumeFailedError("catch-up-timeout") from None
        except OperationFailure as exc:
            if exc.code in HISTORY_LOST_CODES:
                raise ResumeFailedError("history-lost") from None
            if exc.code in POSITION_LOST_CODES:
                raise ResumeFailedError("unknown-position") from None
            if exc.code in TOKEN_REJECTED_CODES:
                # The id decoded, but the server cannot read it as a token: a client's garbage.
                logger.info("a client of flow %s sent an id the server rejects (code %s)", subscriber.flow_id, exc.code)
                raise ResumeFailedError("invalid-id") from None
            logger.warning("catch-up for flow %s failed with server error %s", subscriber.flow_id, exc.code)
            raise ResumeFailedError("catch-up-failed") from None
        except PyMongoError as exc:
            logger.warning("catch-up for flow %s failed (%s)", subscriber.flow_id, type(exc).__name__)
            raise ResumeFailedError("catch-up-failed") from None
        if sent:
            subscriber.discard(lambda delivery: delivery.event is not None and delivery.position in sent)

    # --- snapshots ----------------------------------------------------------------------------

    async def _snapshot(self, subscriber: Subscriber) -> bytes:
        flow_id = subscriber.flow_id
        polls_started = self.source.state.polls_started
        collections: dict[str, dict[str, Any]] = {}
        documents: dict[str, dict[Any, Any]] = {}
        read_time: tuple[int, int] | None = None
        for collection, route in self.pipeline.routes.items():
            options = self.route_options.get(collection, RouteOptions())
            if options.snapshot == "none" or not subscriber.wants(route.event_type):
                continue
            limit = 1 if options.snapshot in ("one", "latest") else options.snapshot_limit
            raw, operation_time = await self.source.read_flow(
                route, flow_id, limit=limit, newest_first=options.snapshot == "latest"
            )
            if operation_time is not None and (read_time is None or operation_time > read_time):
                read_time = operation_time
            documents[collection] = {}
            for document in raw:
                filtered = self._filter_document(collection, document)
                if filtered is not None and filtered.flow_id == flow_id:
                    documents[collection][_key(filtered.document_id)] = filtered.full_document
            collections[collection] = {"eventType": route.event_type, "truncated": len(raw) >= limit > 1}
        async with asyncio.timeout(self.settings.snapshot_timeout_s):
            await self.dispatcher.barrier(read_time, polls_started)
        # From here on nothing awaits: the fold and the release are one step.
        earlier: list[bytes] = []
        for delivery in subscriber.take():
            event = delivery.event
            if event is None or event.collection not in documents:
                earlier.append(delivery.frame)
                continue
            folded = documents[event.collection]
            key = _key(event.document_id)
            if event.operation == "delete":
                folded.pop(key, None)
            elif event.full_document is None:
                continue
            elif self.route_options.get(event.collection, RouteOptions()).snapshot != "latest" or key in folded:
                folded[key] = event.full_document
            elif event.operation == "insert":
                folded.clear()  # a newer document is now the latest
                folded[key] = event.full_document
        for collection, entry in collections.items():
            entry["documents"] = list(documents[collection].values())
        payload = {"type": SNAPSHOT, "flowId": flow_id, "collections": collections}
        return b"".join(earlier) + frame(SNAPSHOT, payload, event_id=self.dispatcher.position)

    def _filter_document(self, collection: str, document: Mapping[str, Any]) -> ChangeEvent | None:
        path = self.pipeline.routes[collection].flow_id_path.split(".")
        value: Any = document
        for part in path:
            value = value.get(part) if isinstance(value, Mapping) else None
        if not routable_flow_id(value):
            return None
        plain = to_plain(document)
        event = ChangeEvent(
            collection=collection,
            operation="insert",
            document_id=plain.get("_id"),
            full_document=plain,
            document_key={"_id": plain.get("_id")},
        )
        result = self.pipeline.process(event)
        return result if isinstance(result, ChangeEvent) else None


def opening_frame(retry_ms: int) -> bytes:
    """The retry hint and a comment, sent at once so the client knows the stream is live."""
    return b"retry: " + str(retry_ms).encode("ascii") + b"\n" + comment_frame("connected")


def _key(document_id: Any) -> Any:
    return document_id if isinstance(document_id, str | int | float | bool | type(None)) else repr(document_id)
