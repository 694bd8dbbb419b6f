"""The Redis keys and channels of one deployment (every process with the same ``hub.url`` and database).

All of them share one hash tag, the database's name in braces, so that the hub's scripts may touch
them together on a Redis Cluster too (they then live in one slot: see ``docs/hub.md`` for sharding).
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "changesync"
INGEST_GROUP = "changesync"
"""The consumer group that reads the ingest stream (the watcher's process is its one consumer)."""


@dataclass(frozen=True, slots=True)
class Keys:
    base: str
    """``changesync:{<database>}``."""

    @classmethod
    def for_database(cls, database: str) -> Keys:
        return cls(f"{PREFIX}:{{{database}}}")

    @property
    def lease(self) -> str:
        """The watcher's lease: ``"<owner> <term>"``, with a time to live."""
        return f"{self.base}:lease"

    @property
    def term(self) -> str:
        """A counter: every new lease takes the next term (the fencing token)."""
        return f"{self.base}:term"

    @property
    def meta(self) -> str:
        """A hash: ``epoch``, ``token`` (the last position published), ``seq``, and the last reset."""
        return f"{self.base}:meta"

    @property
    def control(self) -> str:
        """The channel of ticks (the stream's position), resets and epoch changes."""
        return f"{self.base}:control"

    @property
    def ingest(self) -> str:
        """The stream services may XADD events to, instead of POSTing them (``changesync.hub.ingest``)."""
        return f"{self.base}:ingest"

    def history(self, flow_id: str) -> str:
        """A stream: the flow's recent frames."""
        return f"{self.base}:history:{flow_id}"

    def last(self, flow_id: str) -> str:
        """The sequence number of the flow's latest frame (outlives the history, for ``prev_seq``)."""
        return f"{self.base}:last:{flow_id}"

    def published(self, flow_id: str) -> str:
        """The sequence number of the flow's latest published (non-database) event."""
        return f"{self.base}:published:{flow_id}"

    def channel(self, flow_id: str) -> str:
        """The channel of the flow's frames."""
        return f"{self.base}:flow:{flow_id}"

    @property
    def channel_prefix(self) -> str:
        return f"{self.base}:flow:"
