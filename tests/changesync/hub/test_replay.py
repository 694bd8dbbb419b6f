import pytest

from changesync.frames import Frame
from changesync.hub.replay import ReplayBuffer


def entry(flow_id: str, position: str, size: int = 10) -> Frame:
    return Frame(flow_id, "T", b"x" * size, position)


class TestReplayBuffer:
    def test_returns_what_followed_a_position(self):
        """After a known position, the later deliveries of that flow come back in order."""
        buffer = ReplayBuffer(per_flow=10, max_bytes=10_000)
        for position in "abc":
            buffer.record(entry("f", position))
        buffer.record(entry("g", "z"))
        assert [d.position for d in buffer.after("f", "a")] == ["b", "c"]
        assert buffer.after("f", "c") == []

    def test_unknown_positions_and_flows(self):
        """A position the buffer does not hold (or a flow it never saw) is None: go to history."""
        buffer = ReplayBuffer(per_flow=10, max_bytes=10_000)
        buffer.record(entry("f", "a"))
        assert buffer.after("f", "zz") is None
        assert buffer.after("other", "a") is None

    def test_per_flow_bound_drops_oldest(self):
        """Each flow keeps its newest entries; positions that fell off are no longer found."""
        buffer = ReplayBuffer(per_flow=2, max_bytes=10_000)
        for position in "abcd":
            buffer.record(entry("f", position))
        assert buffer.after("f", "a") is None
        assert [d.position for d in buffer.after("f", "c")] == ["d"]

    def test_byte_budget_evicts_the_least_recent_flow_first(self):
        """Over the byte budget, the flow written longest ago loses its oldest entries first."""
        buffer = ReplayBuffer(per_flow=100, max_bytes=100)
        for index in range(5):
            buffer.record(entry("old", f"o{index}"))
        for index in range(5):
            buffer.record(entry("new", f"n{index}"))
        buffer.record(entry("new", "n5"))
        assert buffer.size_bytes <= 100
        assert buffer.after("old", "o0") is None
        assert [d.position for d in buffer.after("new", "n0")] == ["n1", "n2", "n3", "n4", "n5"]

    def test_forget(self):
        """After a reset nothing is replayed."""
        buffer = ReplayBuffer(per_flow=10, max_bytes=1000)
        buffer.record(entry("f", "a"))
        buffer.forget()
        assert buffer.after("f", "a") is None and buffer.size_bytes == 0 and buffer.flow_count == 0

    def test_invalid_bounds(self):
        """Negative bounds are rejected with the values named."""
        with pytest.raises(ValueError, match="got -1 and 5"):
            ReplayBuffer(per_flow=-1, max_bytes=5)
