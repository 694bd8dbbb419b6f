"""The history path: one flow's changes after a position, read again from the oplog for one client.

A temporary change stream, narrowed on the server to the flow, goes through the same stages as the
live stream (convert → filter → encode), with a pipeline that keeps nothing between changes and
counts nothing as published. It stops at the first change the live stream had published when the
client joined: from there on the client's live queue has everything.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol

from filters import Drop, Pipeline, Route

from ..codec import cluster_time_of, encode_token
from ..errors import ResumeFailedError
from ..frames import Draft, Frame
from ..hub import Clock
from ..logs import RateLimitedLog
from ..metrics import Metrics
from ..mongo import ChangeStream
from ..queries import DATA_OPERATIONS, history_pipeline
from ..resync import reason_for_operation
from .convert import convert_change, flow_id_paths
from .encode import encode

logger = logging.getLogger(__name__)


class StreamOpener(Protocol):
    """What the history path needs of the database (``changesync.mongo.Database``)."""

    def stream(
        self, pipeline: Sequence[Mapping[str, Any]], **options: Any
    ) -> contextlib.AbstractAsyncContextManager[ChangeStream]: ...


class History:
    def __init__(
        self,
        database: StreamOpener,
        routes: Sequence[Route],
        pipeline: Pipeline,
        metrics: Metrics,
        *,
        max_await_time_ms: int,
        max_event_bytes: int,
    ) -> None:
        if pipeline.memo_documents:
            raise ValueError("the history pipeline must not have a memo: catch-ups keep no documents")
        self.database = database
        self.routes = tuple(routes)
        self.pipeline = pipeline
        self.metrics = metrics
        self.max_await_time_ms = max_await_time_ms
        self.max_event_bytes = max_event_bytes
        self._flow_id_paths = flow_id_paths(routes)
        self._rare = RateLimitedLog(logger)

    async def frames_after(
        self, token: Mapping[str, Any], flow_id: str, *, until: Clock, id_suffix: str = ""
    ) -> AsyncIterator[Frame]:
        """The flow's frames after ``token``, up to what ``until`` says was published live. Their ids
        are their oplog positions followed by ``id_suffix`` (the hub's part of the client's id).

        Raises ``SourceError`` when the oplog cannot be read from ``token``, and
        ``ResumeFailedError`` when a reset (a drop, a rename…) lies in between.
        """
        async with self.database.stream(
            history_pipeline(self.routes, flow_id), max_await_time_ms=self.max_await_time_ms, start_after=token
        ) as stream:
            while True:
                change = await stream.try_next()
                if change is None:
                    return
                position = encode_token(change["_id"])
                if not until.has_published(cluster_time_of(change), position):
                    return
                operation = str(change.get("operationType"))
                if operation not in DATA_OPERATIONS:
                    raise ResumeFailedError(reason_for_operation(operation))
                for draft in self._produce(change, operation):
                    if draft.flow_id == flow_id:
                        yield draft.framed(position + id_suffix)

    def _produce(self, change: Mapping[str, Any], operation: str) -> list[Draft]:
        collection = str(change.get("ns", {}).get("coll", ""))
        try:
            result = self.pipeline.process_all(convert_change(change, self._flow_id_paths))
        except Exception as exc:
            self.metrics.events_skipped.labels(reason="malformed").inc()
            self._rare.warning(
                "malformed", "skipped a malformed %s event on %s (%s)", operation, collection, type(exc).__name__
            )
            return []
        if isinstance(result, Drop):
            return []
        encoded = encode(result, max_event_bytes=self.max_event_bytes)
        for error in encoded.errors:
            self.metrics.events_skipped.labels(reason="unserialisable").inc()
            self._rare.warning(
                "unserialisable", "skipped an event on %s that cannot be encoded (%s)", collection, error
            )
        return encoded.drafts
