"""The hub's clock and the barriers a snapshot waits on."""

import asyncio

from changesync.hub.clock import Barriers, Clock


class TestClock:
    def test_what_was_published_before_a_reading(self):
        """A change is published before a clock reading when its time is earlier, or equal and its position seen."""
        clock = Clock()
        assert not clock.has_published((1, 1), "a")
        clock.advance((5, 1), "a")
        clock.advance((5, 1), "b")  # one transaction: one cluster time, several changes
        reading = clock.copy()
        clock.advance((6, 1), "c")
        assert reading.has_published((4, 9), "x")
        assert reading.has_published((5, 1), "b")
        assert not reading.has_published((5, 1), "z")
        assert not reading.has_published((6, 1), "c")
        assert not reading.has_published(None, "a")


class TestBarriers:
    async def test_settles_when_the_clock_passes_its_time(self):
        """A barrier resolves once a later change is published, not at its own time."""
        clock, barriers = Clock(), Barriers()
        clock.advance((5, 1), "a")
        barrier = barriers.add((5, 2), clock)
        clock.advance((5, 2), "b")
        barriers.advanced(clock)
        assert not barrier.done()
        clock.advance((5, 3), "c")
        barriers.advanced(clock)
        assert barrier.done() and len(barriers) == 0

    async def test_a_passed_time_settles_at_once(self):
        """A barrier for a time the clock already passed is resolved when it is made."""
        clock = Clock((9, 9), {"p"})
        assert Barriers().add((1, 1), clock).done()

    async def test_two_idle_notices_settle_it(self):
        """The first empty poll after a barrier may have begun before it; the second began after it."""
        clock, barriers = Clock(), Barriers()
        barrier = barriers.add((5, 5), clock)
        barriers.idle()
        assert not barrier.done()
        barriers.idle()
        assert barrier.done()

    async def test_a_cancelled_waiter_is_dropped(self):
        """A barrier whose waiter gave up (a snapshot timed out) is forgotten at the next settling."""
        clock, barriers = Clock(), Barriers()
        barrier = barriers.add(None, clock)
        barrier.cancel()
        barriers.idle()
        barriers.idle()
        assert len(barriers) == 0
        await asyncio.sleep(0)
