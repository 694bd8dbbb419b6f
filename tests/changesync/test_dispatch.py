"""The dispatcher's document cache: the frames are the same with it and without it."""

from __future__ import annotations

import copy
import datetime
import random
from typing import Any

import pytest
from bson import ObjectId, Timestamp

from changesync.broadcast import Broker
from changesync.codec import encode_token
from changesync.dispatch import Dispatcher
from changesync.metrics import Metrics
from changesync.replay import ReplayBuffer
from changesync.settings import load_settings

FLOWS = ["f1", "f2"]


def dispatcher(*, cache_bytes: int | None = None) -> Dispatcher:
    environ = {} if cache_bytes is None else {"CHANGESYNC_STREAM_DOCUMENT_CACHE_BYTES": str(cache_bytes)}
    settings = load_settings(environ=environ)
    return Dispatcher.from_settings(
        settings, Broker(max_queue=100), Metrics(), ReplayBuffer(per_flow=10, max_bytes=1 << 20)
    )


class Writer:
    """Random writes to a few ``flow_nodes`` documents, as change events with pre-images, as the
    server sends them (bson types, update descriptions, moves between flows, private documents)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.documents: dict[ObjectId, dict[str, Any]] = {}
        self.increment = 0

    def change(self) -> dict[str, Any]:
        rng = self.rng
        if not self.documents or rng.random() < 0.1:
            document = {
                "_id": ObjectId(),
                "flowId": rng.choice(FLOWS),
                "position": {"x": 1.0, "y": 2.0},
                "data": {"label": "n", "credentials": {"key": "sk-secret"}, "items": [1, 2, 3]},
                "_internal": 1,
            }
            self.documents[document["_id"]] = document
            return self._event("insert", document["_id"], fullDocument=copy.deepcopy(document))
        document_id = rng.choice(list(self.documents))
        before = copy.deepcopy(self.documents[document_id])
        roll = rng.random()
        if roll < 0.05:
            del self.documents[document_id]
            return self._event("delete", document_id, fullDocumentBeforeChange=before)
        if roll < 0.1:
            replacement = {"_id": document_id, "flowId": rng.choice(FLOWS), "position": {"x": 0.0, "y": 0.0}}
            self.documents[document_id] = replacement
            return self._event(
                "replace", document_id, fullDocument=copy.deepcopy(replacement), fullDocumentBeforeChange=before
            )
        return self._update(document_id, before)

    def _update(self, document_id: ObjectId, before: dict[str, Any]) -> dict[str, Any]:
        rng = self.rng
        document = self.documents[document_id]
        updated: dict[str, Any] = {}
        removed: list[str] = []
        truncated: list[dict[str, Any]] = []
        choice = rng.randrange(7)
        if choice == 0:
            updated["position.x"] = document.setdefault("position", {})["x"] = rng.random()
        elif choice == 1:
            updated["flowId"] = document["flowId"] = rng.choice(FLOWS)
        elif choice == 2:
            document["visibility"] = rng.choice(["private", "team"])
            updated["visibility"] = document["visibility"]
        elif choice == 3:
            stamp = datetime.datetime(2026, 1, 1) + datetime.timedelta(seconds=rng.randrange(1000))
            updated["data.updatedAt"] = stamp
            document.setdefault("data", {})["updatedAt"] = stamp
        elif choice == 4 and document.get("data", {}).get("items"):
            document["data"]["items"] = document["data"]["items"][:1]
            truncated.append({"field": "data.items", "newSize": 1})
        elif choice == 5 and "position" in document:
            del document["position"]
            removed.append("position")
        else:
            updated["data.credentials.key"] = "sk-" + str(rng.random())
            document.setdefault("data", {}).setdefault("credentials", {})["key"] = updated["data.credentials.key"]
        description = {"updatedFields": updated, "removedFields": removed, "truncatedArrays": truncated}
        return self._event("update", document_id, updateDescription=description, fullDocumentBeforeChange=before)

    def _event(self, operation: str, document_id: ObjectId, **fields: Any) -> dict[str, Any]:
        self.increment += 1
        return {
            "_id": {"_data": f"82{self.increment:08X}"},
            "operationType": operation,
            "clusterTime": Timestamp(1_800_000_000, self.increment),
            "wallTime": datetime.datetime(2026, 1, 1),
            "ns": {"db": "flow_editor", "coll": "flow_nodes"},
            "documentKey": {"_id": document_id},
            **fields,
        }


def rendered(dispatcher: Dispatcher, change: dict[str, Any]) -> list[tuple[str, bytes]]:
    return [(flow_id, delivery.frame) for flow_id, delivery in dispatcher.render(change, encode_token(change["_id"]))]


class TestDocumentCache:
    @pytest.mark.parametrize("seed", range(20))
    def test_same_frames_as_without_the_cache(self, seed):
        """Random inserts, updates (moves, private toggles, unsets, truncations), replaces and deletes
        give byte-identical frames with the cache, a tiny one, and none."""
        cached, tiny, uncached = dispatcher(), dispatcher(cache_bytes=300), dispatcher(cache_bytes=0)
        writer = Writer(seed)
        published = 0
        for _ in range(150):
            change = writer.change()
            expected = rendered(uncached, change)
            assert rendered(cached, change) == expected
            assert rendered(tiny, change) == expected
            published += len(expected)
        assert published > 50
        assert len(cached.images) > 0
        assert len(uncached.images) == 0

    def test_updates_reuse_the_kept_image(self):
        """The second update of a document starts from the image the first one left: the pre-image
        the event carries is not converted again."""
        cached = dispatcher()
        writer = Writer(1)
        insert = writer.change()
        cached.render(insert, "p0")
        document_id = insert["documentKey"]["_id"]
        first = writer._update(document_id, copy.deepcopy(writer.documents[document_id]))
        cached.render(first, "p1")
        kept, _ = cached.images.get("flow_nodes", str(document_id))
        second = writer._update(document_id, {"_id": document_id, "flowId": "garbage the cache ignores"})
        frames = cached.render(second, "p2")
        assert cached.images.get("flow_nodes", str(document_id))[0] is not kept
        for _, delivery in frames:
            assert b"garbage" not in delivery.frame

    def test_reset_and_restart_forget_every_image(self):
        """After a reset (position lost, change skipped, collection dropped) or a reopened stream the
        cache is empty: a missed change must never leave a stale image."""
        cached = dispatcher()
        writer = Writer(2)
        for _ in range(30):
            cached.render(writer.change(), "p")
        assert len(cached.images) > 0
        cached.reset("test")
        assert len(cached.images) == 0
        for _ in range(30):
            cached.render(writer.change(), "p")
        assert len(cached.images) > 0
        cached.on_start(None, None)
        assert len(cached.images) == 0

    def test_history_neither_reads_nor_writes_the_cache(self):
        """Catch-up renders (``live=False``) replay older changes: they must not touch the live images."""
        cached = dispatcher()
        writer = Writer(3)
        for _ in range(30):
            cached.render(writer.change(), "p")
        snapshot = dict(cached.images._entries)
        old = [writer.change() for _ in range(20)]
        for change in old:
            cached.render(change, "p", live=False)
        assert cached.images._entries == snapshot
