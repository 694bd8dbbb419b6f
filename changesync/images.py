"""The latest post-image of recently updated documents, kept between live changes.

A change stream delivers the changes of one document in order, so the post-image built for one
update is the pre-image of the next. Keeping it lets the next update skip converting the pre-image
from BSON and lets the filter pipeline project only the paths the update changed. The images are
exact only while no change is missed: the dispatcher clears them whenever the live stream is
reopened or reset, and only the live stream reads or writes them (catch-up streams replay older
changes for one client).

The budget counts the JSON size of the documents kept: the size when the document was first
converted, plus the size of every update applied since (removals are not subtracted, so the count
errs high). Python objects take several times their JSON size in memory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from filters import Document

Key = tuple[str, Any]


def document_key(document_id: Any) -> Any:
    """A hashable key for a converted document id (ids that are documents are keyed by their repr)."""
    return document_id if isinstance(document_id, str | int | float | bool | type(None)) else repr(document_id)


class PostImages:
    """Least-recently-updated documents are evicted first; ``on_evict`` hears of every image let go."""

    __slots__ = ("_bytes", "_entries", "max_bytes", "on_evict")

    def __init__(self, max_bytes: int, *, on_evict: Callable[[str, Document], None] | None = None) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.on_evict = on_evict
        self._entries: OrderedDict[Key, tuple[Document, int]] = OrderedDict()
        self._bytes = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, collection: str, document_id: Any) -> tuple[Document, int] | None:
        """The latest post-image of the document and its counted size, or ``None``."""
        return self._entries.get((collection, document_key(document_id)))

    def put(self, collection: str, document_id: Any, document: Document, size: int) -> None:
        """Keep ``document`` as the latest image; the image it replaces is not passed to ``on_evict``
        (it is the pre-image of the change being processed: the caller lets it go when done)."""
        key = (collection, document_key(document_id))
        replaced = self._entries.pop(key, None)
        if replaced is not None:
            self._bytes -= replaced[1]
        if size > self.max_bytes:
            if self.on_evict is not None:
                self.on_evict(collection, document)
            return
        self._entries[key] = (document, size)
        self._bytes += size
        while self._bytes > self.max_bytes:
            (evicted_collection, _), (evicted, evicted_size) = self._entries.popitem(last=False)
            self._bytes -= evicted_size
            if self.on_evict is not None:
                self.on_evict(evicted_collection, evicted)

    def discard(self, collection: str, document_id: Any) -> None:
        self._release((collection, document_key(document_id)))

    def clear(self) -> None:
        entries = self._entries
        self._entries = OrderedDict()
        self._bytes = 0
        if self.on_evict is not None:
            for (collection, _), (document, _) in entries.items():
                self.on_evict(collection, document)

    def _release(self, key: Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry[1]
            if self.on_evict is not None:
                self.on_evict(key[0], entry[0])
