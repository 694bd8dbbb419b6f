"""The path of events that are not database writes: a back-end service's event → filter → encode → hub.

``POST /flows/{flowId}/events`` (``changesync.web``) and the hub's ingest stream hand the events
they accept to ``EventPublisher``. The event's ``data`` is treated as a document inserted into its
route's collection, so the route's rules apply to it as to any write: private documents are
refused, internal fields stripped. The hub gives it an id in the flow's order.
"""

from __future__ import annotations

import datetime
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from filters import ChangeEvent, Drop, Pipeline, Route

from ..errors import PublishRefusedError
from ..frames import FLOW_ID_PATTERN, FLOW_ID_RULE, Draft, change_draft
from ..hub import Hub
from ..metrics import Metrics

# Subjects whose publishing rate is tracked at once; the least recent are forgotten.
MAX_TRACKED_SUBJECTS = 10_000


@dataclass(frozen=True, slots=True)
class Prepared:
    """An accepted event, filtered and encoded, before the hub numbers it."""

    draft: Draft
    event_type: str
    collection: str


@dataclass(frozen=True, slots=True)
class Published:
    id: str
    event_type: str
    collection: str


class RateLimiter:
    """A token bucket per subject: ``rate_per_s`` events a second, in bursts of as many."""

    def __init__(self, rate_per_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate_per_s = rate_per_s
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, subject: str) -> bool:
        now = self._clock()
        tokens, at = self._buckets.pop(subject, (self.rate_per_s, now))
        tokens = min(self.rate_per_s, tokens + (now - at) * self.rate_per_s)
        allowed = tokens >= 1
        self._buckets[subject] = (tokens - 1 if allowed else tokens, now)
        if len(self._buckets) > MAX_TRACKED_SUBJECTS:
            self._buckets.popitem(last=False)
        return allowed


class EventPublisher:
    def __init__(
        self,
        pipeline: Pipeline,
        hub: Hub,
        metrics: Metrics,
        *,
        event_types: Sequence[str],
        max_event_bytes: int,
    ) -> None:
        self.pipeline = pipeline
        self.hub = hub
        self.metrics = metrics
        self.max_event_bytes = max_event_bytes
        self._routes: dict[str, list[Route]] = {}
        for route in pipeline.routes.values():
            if route.event_type in event_types:
                self._routes.setdefault(route.event_type, []).append(route)

    @property
    def enabled(self) -> bool:
        return bool(self._routes)

    def prepare(self, flow_id: str, body: Any) -> Prepared:
        """Check, filter and encode one event; raises ``PublishRefusedError`` (counted) when refused."""
        try:
            return self._prepare(flow_id, body)
        except PublishRefusedError as exc:
            self.count_refused(exc.reason)
            raise

    async def publish(self, flow_id: str, body: Any) -> Published:
        """Check, filter, encode and publish one event; raises ``PublishRefusedError`` (counted) when
        refused, ``HubUnavailableError`` when the hub cannot take it now."""
        prepared = self.prepare(flow_id, body)
        event_id = await self.hub.publish_event(prepared.draft)
        self.count_published(prepared)
        return Published(event_id, prepared.event_type, prepared.collection)

    def count_published(self, prepared: Prepared) -> None:
        self.metrics.labelled(self.metrics.published, prepared.event_type).inc()

    def count_refused(self, reason: str) -> None:
        self.metrics.labelled(self.metrics.publish_refused, reason).inc()

    def _prepare(self, flow_id: str, body: Any) -> Prepared:
        if not FLOW_ID_PATTERN.fullmatch(flow_id):
            raise PublishRefusedError(400, "invalid-flow", f"the flow id must be {FLOW_ID_RULE}")
        if not isinstance(body, Mapping):
            raise PublishRefusedError(400, "not-an-object", 'the body must be {"type": …, "data": {…}}')
        event_type, data = body.get("type"), body.get("data")
        if not isinstance(event_type, str) or event_type not in self._routes:
            known = ", ".join(sorted(self._routes))
            raise PublishRefusedError(400, "unknown-type", f"type must be one of: {known}")
        if not isinstance(data, Mapping):
            raise PublishRefusedError(400, "no-data", "data must be a JSON object")
        route = self._route(event_type, body.get("collection"))
        document = self._document(route, flow_id, data)
        event = ChangeEvent(
            collection=route.collection,
            operation="insert",
            document_id=document["_id"],
            full_document=document,
            document_key={"_id": document["_id"]},
            wall_time=_now(),
        )
        result = self.pipeline.process_all(event)
        if isinstance(result, Drop):
            raise PublishRefusedError(422, "dropped", f"the route's rules drop it: {result.reason}")
        (filtered,) = result
        try:
            draft, too_large = change_draft(filtered, max_bytes=self.max_event_bytes)
        except (TypeError, ValueError, orjson.JSONEncodeError) as exc:
            raise PublishRefusedError(400, "unencodable", str(exc)) from None
        if too_large:
            raise PublishRefusedError(413, "too-large", f"larger than limits.max_event_bytes ({self.max_event_bytes})")
        return Prepared(draft, event_type, route.collection)

    def _route(self, event_type: str, collection: Any) -> Route:
        routes = self._routes[event_type]
        if collection is None:
            if len(routes) > 1:
                names = ", ".join(route.collection for route in routes)
                raise PublishRefusedError(
                    400, "ambiguous-type", f"{event_type} has several routes: name the collection ({names})"
                )
            return routes[0]
        for route in routes:
            if route.collection == collection:
                return route
        raise PublishRefusedError(400, "unknown-collection", f"{event_type} has no route for collection {collection!r}")

    @staticmethod
    def _document(route: Route, flow_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """``data`` as a document of the flow: the flow id set at its path, an ``_id`` given if it has none."""
        document = dict(data)
        path = route.flow_id_path.split(".")
        node: Any = document
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise PublishRefusedError(400, "flow-mismatch", f"{route.flow_id_path} must lead to the flow id")
            else:
                child = node[part] = dict(child)
            node = child
        present = node.get(path[-1])
        if present is not None and present != flow_id:
            raise PublishRefusedError(400, "flow-mismatch", f"{route.flow_id_path} is not the flow of the URL")
        node[path[-1]] = flow_id
        if "_id" not in document:
            document["_id"] = uuid.uuid4().hex
        return document


def _now() -> str:
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    return now.isoformat(timespec="milliseconds") + "Z"
