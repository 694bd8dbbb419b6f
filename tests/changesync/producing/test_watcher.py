"""The watcher's retry loop pieces that need no server (the loop itself: ``tests/integration/test_faults.py``)."""

import asyncio
from collections.abc import Callable

import pytest

from changesync.errors import HistoryLostError, SourceUnavailableError
from changesync.producing.watcher import Backoff, Watcher
from changesync.settings import load_settings
from fakes import FakeDatabase


class TestBackoff:
    def test_grows_to_the_cap_with_jitter_and_resets(self):
        """Delays double up to the cap, stay within [ceiling/2, ceiling], and start over after reset."""
        backoff = Backoff(initial_s=0.1, maximum_s=1.0)
        delays = [backoff.next_delay_s() for _ in range(8)]
        ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
        for delay, ceiling in zip(delays, ceilings, strict=True):
            assert ceiling / 2 <= delay <= ceiling
        backoff.reset()
        assert backoff.next_delay_s() <= 0.1

    @pytest.mark.parametrize("attempts", [1, 50])
    def test_never_busy_loops(self, attempts):
        """Every delay is positive, however many attempts came before."""
        backoff = Backoff()
        for _ in range(attempts):
            assert backoff.next_delay_s() > 0


class TestWatcher:
    """The watcher's loop on the in-memory database (real servers: ``tests/integration/test_faults.py``)."""

    @staticmethod
    async def watch(database, listener, **options):
        watcher = Watcher(database, load_settings(environ={}).routes, listener, sleep=no_sleep, **options)
        task = asyncio.create_task(watcher.run())
        return watcher, task

    async def test_an_outage_is_said_once_with_the_target_and_the_hint(self, caplog):
        """Repeated failures with the same cause log one line that names the deployment, the cause and
        `changesync check`; the stream's reopening is logged once too."""
        database = FakeDatabase()
        database.failures = [SourceUnavailableError("127.0.0.1:1: connection refused") for _ in range(20)]
        listener = Recorder()
        watcher, task = await self.watch(
            database, listener, target="mongodb://127.0.0.1:1 (database 'x')", max_await_time_ms=10
        )
        try:
            async with asyncio.timeout(5):
                await watcher.wait_started()
                await listener.polled.wait()
        finally:
            task.cancel()
        messages = [record.getMessage() for record in caplog.records if record.name.startswith("changesync")]
        failures = [message for message in messages if "connection refused" in message and "open again" not in message]
        assert len(failures) == 1, failures
        assert "mongodb://127.0.0.1:1 (database 'x')" in failures[0] and "changesync check" in failures[0]
        assert len([message for message in messages if "open again" in message]) == 1

    async def test_a_lost_position_resets_every_client_and_starts_from_now(self):
        """History lost under the stream: clients are told to reload and the stream starts afresh."""
        database = FakeDatabase()
        listener = Recorder()
        watcher, task = await self.watch(database, listener, max_await_time_ms=10)
        try:
            async with asyncio.timeout(5):
                await watcher.wait_started()
                # A client that writes the moment it hears of the gap: the new stream must see it.
                listener.on_reset = lambda: database.insert("flow_logs", {"_id": 1, "flowId": "f"})
                database.failures.append(HistoryLostError("fell off the oplog", code=286))
                await listener.changed.wait()
        finally:
            task.cancel()
        assert listener.resets == ["history-lost"]
        assert [change["documentKey"]["_id"] for change in listener.changes] == [1]
        assert watcher.state.last_error is None and watcher.state.open


class Recorder:
    """A listener that records what the watcher tells it."""

    def __init__(self) -> None:
        self.changes: list = []
        self.resets: list[str] = []
        self.on_reset: Callable[[], object] = lambda: None
        self.polled, self.changed, self.was_reset = asyncio.Event(), asyncio.Event(), asyncio.Event()

    def on_start(self, start_time, token) -> None:
        pass

    def on_change(self, change) -> None:
        self.changes.append(change)
        self.polled.set()
        self.changed.set()

    def on_idle(self, token) -> None:
        self.polled.set()

    def reset(self, reason: str) -> None:
        self.resets.append(reason)
        self.was_reset.set()
        self.on_reset()

    def skip(self, change) -> None:
        pass

    async def drain(self) -> None:
        await asyncio.sleep(0)


async def no_sleep(seconds: float) -> None:
    await asyncio.sleep(0)
