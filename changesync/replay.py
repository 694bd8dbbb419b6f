"""The recent deliveries of each flow, so that a reconnecting client resumes without a database trip.

A flow's buffer only ever loses its oldest entries, so when a client's last position is found in
it, everything the flow published after that position is there too. What is not found is caught up
from MongoDB's own history instead. Memory is bounded by a total byte budget over all flows.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from .broadcast import Delivery


class ReplayBuffer:
    def __init__(self, *, per_flow: int, max_bytes: int) -> None:
        if per_flow < 0 or max_bytes < 0:
            raise ValueError(f"per_flow and max_bytes must be >= 0, got {per_flow} and {max_bytes}")
        self.per_flow = per_flow
        self.max_bytes = max_bytes
        self.size_bytes = 0
        # Flows in order of their latest delivery: the least recently active is evicted first.
        self._flows: OrderedDict[str, deque[Delivery]] = OrderedDict()

    def record(self, flow_id: str, delivery: Delivery) -> None:
        if self.per_flow == 0 or len(delivery.frame) > self.max_bytes:
            return
        entries = self._flows.get(flow_id)
        if entries is None:
            entries = self._flows[flow_id] = deque()
        else:
            self._flows.move_to_end(flow_id)
        entries.append(delivery)
        self.size_bytes += len(delivery.frame)
        if len(entries) > self.per_flow:
            self.size_bytes -= len(entries.popleft().frame)
        while self.size_bytes > self.max_bytes:
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        flow_id, entries = next(iter(self._flows.items()))
        self.size_bytes -= len(entries.popleft().frame)
        if not entries:
            del self._flows[flow_id]

    def after(self, flow_id: str, position: str) -> list[Delivery] | None:
        """The flow's deliveries after ``position``, or ``None`` when the buffer does not reach back."""
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
