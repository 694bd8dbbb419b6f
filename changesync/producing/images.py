"""The latest post-image of recently updated documents, kept between live changes.

A change stream delivers the changes of one document in order, so the post-image built for one
update is the pre-image of the next. Keeping it lets the next update skip converting the pre-image
from BSON and lets the filter pipeline project only the paths the update changed. The images are
exact only while no change is missed: the dispatcher clears them whenever the live stream is
reopened or reset, and only the live stream reads or writes them (catch-up streams replay older
changes for one client).

Documents are keyed by their exact identity (``codec.identity_key``: the ``documentKey`` as BSON,
types and shard key included), never by converted values, which would make ``ObjectId("…")`` and
the string ``"…"`` one document.

The budget counts the JSON size of the documents kept: measured when an image is first kept and
every ``REMEASURE_EVERY`` updates, plus the size of every update applied in between. Python objects
take about three times their JSON size in memory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

from filters import Document

# Updates applied to a kept image before its size is measured again (sizes in between only grow).
REMEASURE_EVERY = 64


class Kept(NamedTuple):
    document: Document
    size: int
    """JSON bytes counted against the budget."""
    updates: int
    """Updates applied since the size was last measured."""


class PostImages:
    """Least-recently-updated documents are evicted first; ``on_evict`` hears of every image let go."""

    __slots__ = ("_bytes", "_entries", "max_bytes", "on_evict")

    def __init__(self, max_bytes: int, *, on_evict: Callable[[str, Document], None] | None = None) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.on_evict = on_evict
        self._entries: OrderedDict[tuple[str, bytes], Kept] = OrderedDict()
        self._bytes = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def counted_bytes(self) -> int:
        """The JSON bytes counted against the budget."""
        return self._bytes

    def get(self, collection: str, key: bytes) -> Kept | None:
        """The latest post-image of the document with this identity key, or ``None``."""
        return self._entries.get((collection, key))

    def holds(self, collection: str, key: bytes, document: Document) -> bool:
        """Whether ``document`` itself (not an equal one) is the image kept for the key."""
        kept = self._entries.get((collection, key))
        return kept is not None and kept.document is document

    def put(self, collection: str, key: bytes, document: Document, size: int, updates: int = 0) -> None:
        """Keep ``document`` as the latest image; the image it replaces is not passed to ``on_evict``
        (it is the pre-image of the change being processed: the caller lets it go when done)."""
        replaced = self._entries.pop((collection, key), None)
        if replaced is not None:
            self._bytes -= replaced.size
        if size > self.max_bytes:
            if self.on_evict is not None:
                self.on_evict(collection, document)
            return
        self._entries[(collection, key)] = Kept(document, size, updates)
        self._bytes += size
        while self._bytes > self.max_bytes:
            (evicted_collection, _), evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.size
            if self.on_evict is not None:
                self.on_evict(evicted_collection, evicted.document)

    def discard(self, collection: str, key: bytes) -> None:
        kept = self._entries.pop((collection, key), None)
        if kept is not None:
            self._bytes -= kept.size
            if self.on_evict is not None:
                self.on_evict(collection, kept.document)

    def clear(self) -> None:
        entries = self._entries
        self._entries = OrderedDict()
        self._bytes = 0
        if self.on_evict is not None:
            for (collection, _), kept in entries.items():
                self.on_evict(collection, kept.document)
