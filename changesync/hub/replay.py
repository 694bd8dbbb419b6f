"""The recent frames of each flow, so that a reconnecting client resumes without a database trip.

A flow's buffer only ever loses its oldest entries, so when a client's last position is found in
it, everything the flow published after that position is there too. What is not found is caught up
from MongoDB's own history instead. Memory is bounded by a total byte budget over all flows.
"""

from __future__ import annotations

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

    def record(self, frame: Frame) -> None:
        if self.per_flow == 0 or len(frame.data) > self.max_bytes:
            return
        flow_id = frame.flow_id
        entries = self._flows.get(flow_id)
        if entries is None:
            entries = self._flows[flow_id] = deque()
        else:
            self._flows.move_to_end(flow_id)
        entries.append(frame)
        self.size_bytes += len(frame.data)
        if len(entries) > self.per_flow:
            self.size_bytes -= len(entries.popleft().data)
        while self.size_bytes > self.max_bytes:
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        flow_id, entries = next(iter(self._flows.items()))
        self.size_bytes -= len(entries.popleft().data)
        if not entries:
            del self._flows[flow_id]

    def after(self, flow_id: str, position: str) -> list[Frame] | None:
        """The flow's frames after ``position``, or ``None`` when the buffer does not reach back."""
        entries = self._flows.get(flow_id)
        if not entries:
            return None
        for index in range(len(entries) - 1, -1, -1):
            if entries[index].position == position:
                return [entries[i] for i in range(index + 1, len(entries))]
        return None

    def forget(self) -> None:
        """Drop everything (after a reset, old positions must go through the database)."""
        self._flows.clear()
        self.size_bytes = 0

    @property
    def flow_count(self) -> int:
        return len(self._flows)
