"""One task for all the clients of a process: heartbeats, expired tokens, revoked access, and the
farewell on shutdown."""

from __future__ import annotations

import asyncio
import logging
import time

from ..auth import Authorizer, Principal
from ..frames import position_frame, resync_frame
from ..hub import Hub
from ..metrics import Metrics
from .broadcast import Subscriber
from .stream import OpenStreams

logger = logging.getLogger(__name__)

# How often the housekeeping task looks for a shutdown request, in seconds.
HOUSEKEEPING_INTERVAL_S = 0.2
# Expired tokens are looked for this often: a scan of every subscriber, so not at every round.
EXPIRY_CHECK_INTERVAL_S = 1.0
# Seconds a stream may take to send its farewell after the server was told to stop; must stay
# below the server's graceful-shutdown timeout.
SHUTDOWN_GRACE_S = 2.0


class ShutdownNotice:
    """Set when the server starts to shut down (``changesync.server.Server`` sets it on SIGTERM/SIGINT)."""

    __slots__ = ("requested",)

    def __init__(self) -> None:
        self.requested = False

    def request(self) -> None:
        self.requested = True


class Housekeeping:
    def __init__(
        self,
        hub: Hub,
        authorizer: Authorizer,
        streams: OpenStreams,
        shutdown: ShutdownNotice,
        *,
        heartbeat_interval_s: float,
        access_check_interval_s: float,
        retry_ms: int,
        metrics: Metrics | None = None,
    ) -> None:
        self.hub = hub
        self.metrics = Metrics() if metrics is None else metrics
        self.authorizer = authorizer
        self.streams = streams
        self.shutdown = shutdown
        self.heartbeat_interval_s = heartbeat_interval_s
        self.access_check_interval_s = access_check_interval_s
        self.retry_ms = retry_ms

    async def run(self) -> None:
        broker = self.hub.broker
        next_heartbeat = time.monotonic() + self.heartbeat_interval_s
        next_access_check = time.monotonic() + self.access_check_interval_s
        next_expiry_check = time.monotonic()
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)
            if self.shutdown.requested:
                await self.say_farewell()
                return
            now = time.monotonic()
            if now >= next_heartbeat:
                next_heartbeat = now + self.heartbeat_interval_s
                broker.tick(position_frame(self.hub.position))
            if now >= next_expiry_check:
                next_expiry_check = now + EXPIRY_CHECK_INTERVAL_S
                self.close_expired()
            if now >= next_access_check:
                next_access_check = now + self.access_check_interval_s
                await self.close_revoked()

    async def say_farewell(self) -> None:
        """Clients reconnect (to this instance after a restart, or to another) and resume from here."""
        farewell = position_frame(self.hub.position, comment="shutting down", retry_ms=self.retry_ms)
        self.hub.broker.close_all("shutdown", farewell)
        # Live streams end at once; those still busy (a snapshot, a catch-up, a client that
        # stopped reading) are cut off after the grace period, without a farewell.
        await asyncio.sleep(SHUTDOWN_GRACE_S)
        if cut := self.streams.interrupt_all():
            logger.warning("%d streams did not end within %g s of the shutdown; cut off", cut, SHUTDOWN_GRACE_S)

    def close_expired(self) -> None:
        """End streams whose token expired; the client reconnects with a fresh one and resumes."""
        now = time.time()
        for subscriber in self.hub.broker.subscribers():
            if subscriber.expires_at is not None and subscriber.expires_at < now and subscriber.closed_reason is None:
                subscriber.close(
                    "token-expired", resync_frame(subscriber.flow_id, "token-expired", retry_ms=self.retry_ms)
                )
                self.metrics.labelled(self.metrics.resyncs, "token-expired").inc()

    async def close_revoked(self) -> None:
        """Ask again, for every subject and flow with open streams, and end those no longer allowed."""
        pairs: dict[tuple[str, str], list[Subscriber]] = {}
        for subscriber in self.hub.broker.subscribers():
            if not subscriber.unrestricted and subscriber.closed_reason is None:
                pairs.setdefault((subscriber.subject, subscriber.flow_id), []).append(subscriber)
        for (subject, flow_id), subscribers in pairs.items():
            try:
                allowed = await self.authorizer.allowed(Principal(subject), flow_id, fresh=True)
            except Exception:
                logger.warning("could not re-check access of a subject to flow %s; keeping its streams", flow_id)
                continue
            if not allowed:
                farewell = resync_frame(flow_id, "access-revoked")
                for subscriber in subscribers:
                    subscriber.close("access-revoked", farewell)
                self.metrics.labelled(self.metrics.resyncs, "access-revoked").inc(len(subscribers))
