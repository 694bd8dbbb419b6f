"""The watcher's retry loop pieces that need no server (the loop itself: ``tests/integration/test_faults.py``)."""

import pytest

from changesync.producing.watcher import Backoff


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
