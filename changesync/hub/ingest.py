"""The ingest stream: services that speak Redis add their events to it instead of POSTing them.

An entry has two fields: ``flow``, the flow's id, and ``event``, the JSON of a POST's body
(``{"type": …, "data": {…}}``)::

    XADD changesync:{flow_editor}:ingest MAXLEN ~ 100000 * flow <flowId> event <json>

The process that holds the watcher's lease reads the stream in the consumer group ``changesync``,
checks, filters and encodes each entry as it would a POST (``EventPublisher.prepare``), and
publishes it in the same atomic step that acknowledges the entry. So an entry is published once,
or stays pending, and the next holder of the lease (the same consumer) publishes it: once the XADD
returned, the event is not lost. Refused entries are logged, counted and acknowledged, never retried.
Entries are read in the order they were added, so a flow's events keep the order of its XADDs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from ..errors import HubUnavailableError, PublishRefusedError
from ..producing.publishing import EventPublisher
from .edge import RedisHub
from .keys import INGEST_GROUP, Keys

logger = logging.getLogger(__name__)

CONSUMER = "watcher"
"""Every holder of the lease reads as the same consumer, so it also reads what the last one left pending."""
BATCH = 100
BLOCK_MS = 1000
# While the deployment's change stream has no position yet, an event cannot be numbered: wait.
UNAVAILABLE_RETRY_S = 0.5


class IngestReader:
    def __init__(self, redis: Redis, keys: Keys, publisher: EventPublisher, hub: RedisHub) -> None:
        self.redis = redis
        self.keys = keys
        self.publisher = publisher
        self.hub = hub

    async def run(self) -> None:
        """Read and publish until cancelled; Redis errors end it (the lease's holder steps down)."""
        await self._create_group()
        position = "0"  # first what was read and not acknowledged, then (">") what is new
        while True:
            block = None if position == "0" else BLOCK_MS
            try:
                reply: Any = await self.redis.xreadgroup(
                    INGEST_GROUP, CONSUMER, {self.keys.ingest: position}, count=BATCH, block=block
                )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                logger.warning("the ingest stream's group is gone (Redis lost its data?): reading it from its start")
                await self._create_group()
                continue
            entries = reply[0][1] if reply else []
            if position == "0" and not entries:
                position = ">"
            for entry_id, fields in entries:
                await self._handle(entry_id.decode(), fields)

    async def _create_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.keys.ingest, INGEST_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _handle(self, entry_id: str, fields: dict[bytes, bytes] | None) -> None:
        try:
            flow_id, body = _parse(fields)
        except PublishRefusedError as exc:
            self.publisher.count_refused(exc.reason)
            logger.warning("ingest entry %s refused: %s", entry_id, exc)
            await self.redis.xack(self.keys.ingest, INGEST_GROUP, entry_id)
            return
        try:
            prepared = self.publisher.prepare(flow_id, body)
        except PublishRefusedError as exc:
            logger.warning("ingest entry %s refused: %s", entry_id, exc)
            await self.redis.xack(self.keys.ingest, INGEST_GROUP, entry_id)
            return
        while True:
            try:
                event_id = await self.hub.publish_ingested(prepared.draft, entry_id)
            except HubUnavailableError as exc:
                logger.debug("ingest entry %s waits: %s", entry_id, exc.cause)
                await asyncio.sleep(UNAVAILABLE_RETRY_S)
                continue
            if event_id is not None:
                self.publisher.count_published(prepared)
            return


def _parse(fields: dict[bytes, bytes] | None) -> tuple[str, Any]:
    """An entry's flow id and event; raises ``PublishRefusedError`` for what is not one."""
    if not fields:  # read while pending, then trimmed away
        raise PublishRefusedError(410, "trimmed", "the entry was trimmed from the stream before it was read")
    flow, event = fields.get(b"flow"), fields.get(b"event")
    if flow is None or event is None:
        raise PublishRefusedError(400, "not-an-entry", "an entry needs the fields flow and event")
    try:
        return flow.decode(), orjson.loads(event)
    except (UnicodeDecodeError, orjson.JSONDecodeError):
        raise PublishRefusedError(400, "not-json", "the event field is not JSON (or the flow not UTF-8)") from None
