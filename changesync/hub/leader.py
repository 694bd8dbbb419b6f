"""One watcher per deployment: the process that holds the lease in Redis tails the change stream.

Every process runs a ``Leader``. It tries to take the lease (``SET NX PX``, each new lease with the
next *term*, the fencing token); the one that holds it renews it and runs the watcher, which
publishes through a ``RedisPublisher``. Every write the watcher makes checks the lease in the same
atomic step, so a watcher that paused past its lease's end (and was replaced) writes nothing more.
When the lease is lost the watcher stops, and the process goes back to waiting for the lease. A
new holder resumes from the position Redis holds: the last one published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from ..check import warn_about_images
from ..codec import decode_token
from ..errors import LeadershipLostError
from ..metrics import Metrics
from ..mongo import Database
from ..producing.producer import build_producer
from ..producing.watcher import Watcher
from ..settings import Settings
from .ingest import IngestReader
from .keys import Keys
from .local import new_epoch
from .publisher import RedisPublisher
from .scripts import ACQUIRE, LEAD, RELEASE, RENEW

logger = logging.getLogger(__name__)

_E = TypeVar("_E", bound=BaseException)

# How often, within a lease's time to live, its holder renews it, and others try to take it.
RENEWALS_PER_TTL = 3
ATTEMPTS_PER_TTL = 4
# How long the records kept beside a flow's history (its latest numbers) outlive the history.
RECORD_TTL_FACTOR = 24


def process_owner() -> str:
    """Who holds a lease: this host and process, and a random part (a restarted pid is someone else)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Leader:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        database: Database,
        settings: Settings,
        metrics: Metrics,
        *,
        target: str = "",
        owner: str | None = None,
        ingest: IngestReader | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.database = database
        self.settings = settings
        self.metrics = metrics
        self.target = target
        self.owner = owner or process_owner()
        self.ingest = ingest
        self._warned_about_images = False
        """Reads the ingest stream while this process holds the lease (``None``: publishing is off)."""
        self.ttl_s = settings.hub.lease_ttl_s
        self.watcher: Watcher | None = None
        """The watcher while this process holds the lease."""
        self._acquire = redis.register_script(ACQUIRE)
        self._renew = redis.register_script(RENEW)
        self._release = redis.register_script(RELEASE)
        self._lead = redis.register_script(LEAD)

    @property
    def role(self) -> str:
        return "watcher" if self.watcher is not None else "edge"

    async def run(self) -> None:
        while True:
            value = await self._take_lease()
            logger.info("this process holds the watcher's lease (%s) and watches %s", value, self.target)
            try:
                await self._lead_while_held(value)
            except* LeadershipLostError as lost:
                logger.warning("this process stopped watching: %s", _first(lost))
            except* (RedisError, OSError) as failed:
                logger.warning("this process stopped watching: Redis failed (%s)", _first(failed))
            finally:
                self.watcher = None
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    async with asyncio.timeout(1):
                        await self._release(keys=[self.keys.lease], args=[value])

    async def _take_lease(self) -> str:
        while True:
            try:
                value = await self._acquire(keys=[self.keys.lease, self.keys.term], args=[self.owner, self._ttl_ms])
            except (RedisError, OSError) as exc:
                logger.debug("could not try for the lease (%s)", exc)
                value = None
            if value is not None:
                return value.decode() if isinstance(value, bytes) else str(value)
            await asyncio.sleep(self.ttl_s / ATTEMPTS_PER_TTL)

    async def _lead_while_held(self, value: str) -> None:
        force_new_epoch = False
        while True:
            try:
                await self._watch(value, force_new_epoch=force_new_epoch)
            except* LeadershipLostError as lost:
                kind = _first(lost).kind
                if kind == "fenced":
                    raise
                # Redis's position is not ours (a failover lost writes), or its epoch changed: start
                # over from what Redis holds; a divergence makes a new epoch, so that ids handed out
                # since can no longer be taken for positions Redis does not hold.
                logger.warning("Redis's history moved under this watcher (%s); resuming from Redis", kind)
                force_new_epoch = kind == "diverged"

    async def _watch(self, value: str, *, force_new_epoch: bool) -> None:
        reply = await self._lead(
            keys=[self.keys.lease, self.keys.meta],
            args=[value, new_epoch(), self.keys.control, 1 if force_new_epoch else 0],
        )
        if reply[0] != b"ok":
            raise LeadershipLostError("fenced")
        epoch, token = reply[1].decode(), reply[2].decode()
        hub = self.settings.hub
        publisher = RedisPublisher(
            self.redis,
            self.keys,
            lease_value=value,
            epoch=epoch,
            token=token,
            history_per_flow=hub.history_per_flow,
            history_ttl_ms=int(hub.history_ttl_s * 1000),
            record_ttl_ms=int(hub.history_ttl_s * 1000 * RECORD_TTL_FACTOR),
        )
        producer = build_producer(self.settings, publisher, self.metrics)
        self.watcher = Watcher(
            self.database,
            self.settings.routes,
            producer,
            target=self.target,
            on_restart=lambda kind: self.metrics.stream_restarts.labels(kind=kind).inc(),
            max_await_time_ms=self.settings.stream.max_await_time_ms,
            resume_after=decode_token(token) if token else None,
        )
        replication_id = await self._replication_id()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.watcher.run(), name="changesync-watcher")
            tasks.create_task(publisher.run(), name="changesync-publisher")
            tasks.create_task(self._keep(value, replication_id), name="changesync-lease")
            if self.ingest is not None:
                tasks.create_task(self.ingest.run(), name="changesync-ingest")
            if not self._warned_about_images:
                tasks.create_task(self._warn_about_images(self.watcher), name="changesync-images")

    async def _warn_about_images(self, watcher: Watcher) -> None:
        """Once this process first watches and the stream is open, log the routes that lack pre-images."""
        await watcher.wait_started()
        self._warned_about_images = True
        await warn_about_images(self.database, self.settings.routes)

    async def _keep(self, value: str, replication_id: str | None) -> None:
        """Renew the lease; raises ``LeadershipLostError`` once it is no longer ours, or may not be,
        and (``diverged``) when Redis's replication id changed: a failover (or a restart) may have lost
        the latest writes, published events included, while the position it holds looks current."""
        renewed_at = time.monotonic()
        while True:
            await asyncio.sleep(self.ttl_s / RENEWALS_PER_TTL)
            try:
                held = await self._renew(keys=[self.keys.lease], args=[value, self._ttl_ms])
                if replication_id is not None and await self._replication_id() != replication_id:
                    raise LeadershipLostError("diverged", "Redis's replication id changed (a failover or a restart)")
            except (RedisError, OSError) as exc:
                if time.monotonic() - renewed_at >= self.ttl_s:
                    raise LeadershipLostError(
                        "fenced", f"could not renew the lease for {self.ttl_s:g} s ({exc})"
                    ) from exc
                continue
            if not held:
                raise LeadershipLostError("fenced", "the lease is another process's now")
            renewed_at = time.monotonic()

    async def _replication_id(self) -> str | None:
        """The Redis server's replication id (``master_replid``); ``None`` where INFO is not allowed."""
        try:
            info: Any = await self.redis.info("replication")
        except ResponseError:
            return None
        replid = info.get("master_replid")
        return None if replid is None else str(replid)

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000))


def _first(group: BaseExceptionGroup[_E]) -> _E:
    """The first exception of a (possibly nested) group."""
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first
