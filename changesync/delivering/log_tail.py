"""What a ``SNAPSHOT`` holds of a log collection: the latest execution's text so far, by node.

A route with ``snapshot = "log"`` stores output as chunks (``{flowId, executionId, nodeId, chunk}``
with the default field names). A client that connects while an LLM is streaming gets each node's
chunks joined into one text, bounded per node (the tail is kept), instead of thousands of events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..payloads import SnapshotLog, SnapshotNodeLog
from ..routes import RouteOptions

_MISSING: Any = object()


def value_at(document: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` of a (filtered, plain) document, or ``None``."""
    value: Any = document
    for part in path.split("."):
        value = value.get(part, _MISSING) if isinstance(value, Mapping) else _MISSING
        if value is _MISSING:
            return None
    return value


class _Node:
    __slots__ = ("chunks", "node_id", "oldest", "room", "texts", "truncated")

    def __init__(self, node_id: Any, room: int) -> None:
        self.node_id = node_id
        self.texts: list[str] = []
        self.chunks = 0
        self.room = room
        self.truncated = False
        self.oldest = 0

    def prepend(self, text: str, index: int) -> None:
        """Add an older chunk in front, or as much of its end as there is room for."""
        if self.truncated:
            return
        encoded = text.encode()
        if len(encoded) > self.room:
            self.truncated = True
            if self.room == 0:
                return
            # The last ``room`` bytes, cut at a character boundary.
            encoded = encoded[len(encoded) - self.room :]
            text = encoded.decode(errors="ignore")
        self.room -= len(encoded)
        self.texts.append(text)
        self.chunks += 1
        self.oldest = index

    def entry(self, read_all: bool) -> SnapshotNodeLog:
        return {
            "nodeId": self.node_id,
            "text": "".join(reversed(self.texts)),
            "chunks": self.chunks,
            "truncated": self.truncated or not read_all,
        }


def log_tail(
    event_type: str,
    execution_id: Any,
    newest_first: Iterable[Mapping[str, Any]],
    options: RouteOptions,
    *,
    read_all: bool,
) -> SnapshotLog:
    """Join the chunks of one execution (filtered documents, newest first) into each node's text.

    ``read_all`` is false when the read stopped at ``snapshot_limit``: older chunks may exist, so
    every node is marked ``truncated``. Chunks whose text is not a string are skipped.
    """
    nodes: dict[str, _Node] = {}
    for index, document in enumerate(newest_first):
        text = value_at(document, options.log_text)
        if not isinstance(text, str):
            continue
        node_id = value_at(document, options.log_node)
        key = repr(node_id)
        node = nodes.get(key)
        if node is None:
            node = nodes[key] = _Node(node_id, options.log_tail_bytes)
        node.prepend(text, index)
    # Read newest first: the node whose oldest chunk came last started first.
    ordered = sorted(nodes.values(), key=lambda node: -node.oldest)
    return {
        "eventType": event_type,
        "executionId": execution_id,
        "nodes": [node.entry(read_all) for node in ordered if node.chunks],
    }
