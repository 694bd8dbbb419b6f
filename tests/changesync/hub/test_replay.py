"""The hub's recent frames per flow, by sequence number: what it can replay and what it cannot vouch for."""

import pytest

from changesync.frames import Frame
from changesync.hub.replay import ReplayBuffer


def entry(flow_id: str, seq: int, size: int = 10) -> Frame:
    return Frame(flow_id, "T", b"x" * size, f"p{seq}", seq=seq)


def seqs(frames: list[Frame] | None) -> list[int] | None:
    return None if frames is None else [frame.seq for frame in frames]


class TestReplayBuffer:
    def test_returns_what_followed_a_number(self):
        """After a number, the later frames of that flow come back in order, whatever flow had the numbers between."""
        buffer = ReplayBuffer(per_flow=10, max_bytes=10_000)
        for seq in (1, 2, 4):
            buffer.record(entry("f", seq))
        buffer.record(entry("g", 3))
        assert seqs(buffer.after("f", 1)) == [2, 4]
        assert seqs(buffer.after("f", 3)) == [4], "a number of another flow (or a heartbeat's) resumes too"
        assert buffer.after("f", 4) == []

    def test_each_frame_knows_the_flows_previous_one(self):
        """``record`` sets prev_seq: the flow's previous frame, or 0 for the first one ever."""
        buffer = ReplayBuffer(per_flow=10, max_bytes=10_000)
        assert buffer.record(entry("f", 1)).prev_seq == 0
        buffer.record(entry("g", 2))
        assert buffer.record(entry("f", 3)).prev_seq == 1

    def test_a_flow_it_never_saw_has_nothing_to_replay_until_something_was_let_go(self):
        """With nothing let go, a flow without frames had none; once anything went, it may have had some."""
        buffer = ReplayBuffer(per_flow=1, max_bytes=10_000)
        assert buffer.after("other", 0) == []
        buffer.record(entry("f", 1))
        buffer.record(entry("f", 2))  # lets 1 go
        assert buffer.after("other", 0) is None
        assert buffer.after("other", 1) == []

    def test_per_flow_bound_drops_oldest(self):
        """Each flow keeps its newest entries; numbers before them can no longer be vouched for."""
        buffer = ReplayBuffer(per_flow=2, max_bytes=10_000)
        for seq in range(1, 5):
            buffer.record(entry("f", seq))
        assert buffer.after("f", 1) is None
        assert seqs(buffer.after("f", 2)) == [3, 4]

    def test_a_frame_too_large_to_keep_ends_what_the_flow_can_replay(self):
        """A frame over the budget is not kept, and the flow's older frames no longer reach the present."""
        buffer = ReplayBuffer(per_flow=10, max_bytes=100)
        buffer.record(entry("f", 1))
        buffer.record(entry("f", 2, size=500))
        assert buffer.after("f", 1) is None
        assert buffer.after("f", 2) == []

    def test_byte_budget_evicts_the_least_recent_flow_first(self):
        """Over the byte budget, the flow written longest ago loses its oldest entries first."""
        buffer = ReplayBuffer(per_flow=100, max_bytes=100)
        for seq in range(1, 6):
            buffer.record(entry("old", seq))
        for seq in range(6, 12):
            buffer.record(entry("new", seq))
        assert buffer.size_bytes <= 100
        assert buffer.after("old", 0) is None, "seq 1 was let go"
        assert seqs(buffer.after("old", 1)) == [2, 3, 4, 5], "a client that had 1 misses nothing that was let go"
        assert seqs(buffer.after("new", 6)) == [7, 8, 9, 10, 11]

    def test_forget(self):
        """After a reset nothing before it is replayed."""
        buffer = ReplayBuffer(per_flow=10, max_bytes=1000)
        buffer.record(entry("f", 1))
        buffer.forget(2)
        assert buffer.after("f", 1) is None and buffer.size_bytes == 0 and buffer.flow_count == 0
        assert buffer.after("f", 2) == []

    def test_invalid_bounds(self):
        """Negative bounds are rejected with the values named."""
        with pytest.raises(ValueError, match="got -1 and 5"):
            ReplayBuffer(per_flow=-1, max_bytes=5)
