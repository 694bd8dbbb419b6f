"""The recent frames of each flow, so that a reconnecting client resumes without a database trip.

Frames carry the hub's sequence numbers. A client that was at sequence number ``h`` has missed the
flow's frames numbered above ``h``; the buffer can say which they are as long as it has not let
go of any of them. Each frame keeps the number of the flow's previous frame (``prev_seq``), so the
oldest frame kept says how far back the buffer reaches. What it cannot vouch for is caught up from
MongoDB's own history instead. Memory is bounded by a count per flow and a total byte budget.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict, deque

from ..frames import Frame


class ReplayBuffer:
    def __init__(self, *, per_flow: int, max_bytes: int) -> None:
        if per_flow < 0 or max_bytes < 0:
            raise ValueError(f"per_flow and max_bytes must be >= 0, got {per_flow} and {max_bytes}")
        self.per_flow = per_flow
        self.max_bytes = max_bytes
        self.size_bytes = 0
        # Flows in order of their latest frame: the least recently active is evicted first.
        self._flows: OrderedDict[str, deque[Frame]] = OrderedDict()
        # The highest sequence number of any frame let go (or never kept): the previous frame of a
        # flow that has none here is at most this.
        self._let_go = 0

    def record(self, frame: Frame) -> Frame:
        """Keep ``frame`` (numbered ``frame.seq``); returns it with its ``prev_seq`` set."""
        flow_id = frame.flow_id
        entries = self._flows.get(flow_id)
        prev_seq = entries[-1].seq if entries else self._let_go
        frame = dataclasses.replace(frame, prev_seq=prev_seq)
        size = _size(frame)
        if self.per_flow == 0 or size > self.max_bytes:
            self._let_go = max(self._let_go, frame.seq)
            if entries:  # what is kept no longer reaches up to the flow's latest frame
                self._drop_flow(flow_id)
            return frame
        if entries is None:
            entries = self._flows[flow_id] = deque()
        else:
            self._flows.move_to_end(flow_id)
        entries.append(frame)
        self.size_bytes += size
        if len(entries) > self.per_flow:
            self._let_go_of(entries.popleft())
        while self.size_bytes > self.max_bytes:
            self._evict_oldest()
        return frame

    def _let_go_of(self, frame: Frame) -> None:
        self.size_bytes -= _size(frame)
        self._let_go = max(self._let_go, frame.seq)

    def _drop_flow(self, flow_id: str) -> None:
        for frame in self._flows.pop(flow_id):
            self._let_go_of(frame)

    def _evict_oldest(self) -> None:
        flow_id, entries = next(iter(self._flows.items()))
        self._let_go_of(entries.popleft())
        if not entries:
            del self._flows[flow_id]

    def after(self, flow_id: str, seq: int) -> list[Frame] | None:
        """The flow's frames numbered above ``seq``, or ``None`` when the buffer may have let one go."""
        entries = self._flows.get(flow_id)
        if not entries:
            return [] if self._let_go <= seq else None
        if entries[0].prev_seq > seq:
            return None
        return [frame for frame in entries if frame.seq > seq]

    def forget(self, seq: int) -> None:
        """Drop everything up to ``seq`` (after a reset, old positions must go through the database)."""
        self._flows.clear()
        self.size_bytes = 0
        self._let_go = max(self._let_go, seq)

    @property
    def flow_count(self) -> int:
        return len(self._flows)


def _size(frame: Frame) -> int:
    """What a frame holds in memory: both of its variants."""
    return len(frame.data) + len(frame.patch_data)
