"""The producing side of the Redis hub: what the deployment's one watcher publishes, in batches.

The producer's calls (``publish``, ``idle``, ``reset``) are queued and sent by ``run`` as one
script per batch (``scripts.PUBLISH_BATCH``), which frames, stores and publishes every change of
the batch and moves the deployment's position in one atomic step, only if the lease is still
ours and Redis's position is the one we last stored. When it is not, ``run`` raises
``LeadershipLostError`` and the leader starts over: from the position Redis holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..errors import LeadershipLostError
from ..frames import Draft
from .clock import ClusterTime
from .keys import Keys
from .scripts import PUBLISH_BATCH

logger = logging.getLogger(__name__)

# Changes sent in one script at most: a script blocks Redis while it runs.
MAX_BATCH_CHANGES = 256
# Changes queued before the watcher is held up (``drain``) until Redis has taken them.
MAX_QUEUED_CHANGES = 4096
# Waits between attempts to send a batch while Redis cannot be reached.
RETRY_INITIAL_S = 0.1
RETRY_MAXIMUM_S = 2.0


@dataclass(slots=True)
class _Batch:
    arguments: list[str | int | bytes] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    changes: int = 0
    final: tuple[str, ClusterTime | None] | None = None
    idle: bool = False


class RedisPublisher:
    """The hub's producing half for the lease holder (a ``Sink`` for ``Producer``)."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        lease_value: str,
        epoch: str,
        token: str,
        history_per_flow: int,
        history_ttl_ms: int,
        record_ttl_ms: int,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.lease_value = lease_value
        self.epoch = epoch
        self.token = token
        """The position Redis holds: the last one this publisher stored."""
        self.history_per_flow = history_per_flow
        self.history_ttl_ms = history_ttl_ms
        self.record_ttl_ms = record_ttl_ms
        self._script = redis.register_script(PUBLISH_BATCH)
        self._batches: deque[_Batch] = deque([_Batch()])
        self._queued = 0
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()

    # --- the Sink the producer writes to ------------------------------------------------------

    def start(self, position: str | None, start_time: ClusterTime | None) -> None:
        if position is not None:
            self._close_with(position, start_time, idle=False)

    @property
    def _batch(self) -> _Batch:
        """The batch being filled: the last one, or a new one when it is full."""
        if self._batches[-1].changes >= MAX_BATCH_CHANGES:
            self._batches.append(_Batch(final=self._batches[-1].final))
        return self._batches[-1]

    def publish(self, position: str, cluster_time: ClusterTime | None, drafts: Sequence[Draft]) -> None:
        batch = self._batch
        t, i = cluster_time if cluster_time is not None else (0, 0)
        batch.arguments += ["C", position, t, i, len(drafts)]
        for draft in drafts:
            batch.arguments += [
                draft.flow_id,
                draft.event_type,
                draft.payload,
                draft.collection,
                draft.operation,
                draft.document_key,
                draft.patch_payload,
            ]
            batch.keys += [self.keys.history(draft.flow_id), self.keys.last(draft.flow_id)]
        batch.changes += 1
        self._queued += 1
        self._close_with(position, cluster_time, idle=False)

    def idle(self, position: str | None) -> None:
        if position is not None:
            self._close_with(position, None, idle=True)

    def reset(self, reason: str) -> None:
        batch = self._batch
        position = batch.final[0] if batch.final is not None else self.token
        batch.arguments += ["R", reason, position]
        batch.changes += 1
        self._queued += 1
        self._wake.set()

    def _close_with(self, position: str, cluster_time: ClusterTime | None, *, idle: bool) -> None:
        batch = self._batches[-1]
        # An idle poll keeps the cluster time of the change before it.
        previous = batch.final[1] if batch.final is not None else None
        batch.final = (position, cluster_time if cluster_time is not None else previous)
        batch.idle = idle
        self._wake.set()
        if self._queued >= MAX_QUEUED_CHANGES:
            self._drained.clear()

    async def drain(self) -> None:
        """Until Redis has taken most of what is queued (the watcher calls this between batches of changes)."""
        await asyncio.sleep(0)
        await self._drained.wait()

    # --- sending ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Send batches until the lease is lost (``LeadershipLostError``) or the task is cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                batch = self._batches.popleft()
                if not self._batches:
                    self._batches.append(_Batch())
                if batch.final is not None or batch.changes:
                    await self._send_until_taken(batch)
                    self._queued = max(0, self._queued - batch.changes)
                if self._queued < MAX_QUEUED_CHANGES:
                    self._drained.set()
                if self._batches[0].final is None and not self._batches[0].changes:
                    break

    async def _send_until_taken(self, batch: _Batch) -> None:
        """Send ``batch``, again while Redis cannot be reached: the lease's end (a ``fenced`` answer,
        or the leader's renewals giving up) is what stops it."""
        delay_s = RETRY_INITIAL_S
        while True:
            try:
                await self._send(batch)
                return
            except (RedisError, OSError) as exc:
                logger.warning("could not publish to Redis (%s); retrying in %.1f s", exc, delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(RETRY_MAXIMUM_S, delay_s * 2)

    async def _send(self, batch: _Batch) -> None:
        final_position, final_time = batch.final if batch.final is not None else (self.token, None)
        t, i = final_time if final_time is not None else (0, 0)
        head: list[str | int | bytes] = [
            self.lease_value,
            self.token,
            self.epoch,
            self.history_per_flow,
            self.history_ttl_ms,
            self.record_ttl_ms,
            self.keys.channel_prefix,
            self.keys.control,
            1 if batch.idle else 0,
            final_position,
            t,
            i,
        ]
        reply = await self._script(keys=[self.keys.lease, self.keys.meta, *batch.keys], args=head + batch.arguments)
        outcome = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        if outcome != "ok":
            detail = reply[1].decode() if len(reply) > 1 and isinstance(reply[1], bytes) else ""
            if not (outcome == "diverged" and detail == final_position):
                raise LeadershipLostError(outcome, detail)
            # Redis had taken this very batch; its answer was lost with the connection.
        self.token = final_position
