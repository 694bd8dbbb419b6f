"""The producer's live path, and its document cache: the frames are the same with it and without it."""

from __future__ import annotations

import contextlib
import copy
import datetime
import random
from typing import Any

import pytest
from bson import Int64, ObjectId, Timestamp

from changesync.codec import identity_key
from changesync.delivering.broadcast import Broker
from changesync.hub.clock import Clock
from changesync.hub.local import LocalHub
from changesync.hub.replay import ReplayBuffer
from changesync.metrics import Metrics
from changesync.producing.history import History
from changesync.producing.producer import Producer, build_producer
from changesync.settings import load_settings
from filters import Pipeline

FLOWS = ["f1", "f2"]


def producer(*, cache_bytes: int | None = None) -> Producer:
    environ = {} if cache_bytes is None else {"CHANGESYNC_STREAM_DOCUMENT_CACHE_BYTES": str(cache_bytes)}
    settings = load_settings(environ=environ)
    metrics = Metrics()
    return build_producer(
        settings, LocalHub(Broker(max_queue=100), ReplayBuffer(per_flow=10, max_bytes=1 << 20), metrics), metrics
    )


class Writer:
    """Random writes to a few ``flow_nodes`` documents, as change events with pre-images, as the
    server sends them (bson types, update descriptions, moves between flows, private documents)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.documents: dict[ObjectId, dict[str, Any]] = {}
        self.increment = 0

    def keys(self) -> list[dict[str, Any]]:
        """The documentKey of every document written so far."""
        return [{"_id": document_id} for document_id in self.documents]

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
        # As MongoDB 6.1+ sends them with showExpandedEvents: none of these paths is ambiguous.
        description = {
            "updatedFields": updated,
            "removedFields": removed,
            "truncatedArrays": truncated,
            "disambiguatedPaths": {},
        }
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


def rendered(producer: Producer, change: dict[str, Any]) -> list[tuple[str, bytes]]:
    return [(draft.flow_id, draft.payload) for draft in producer.drafts(change)]


class TestDocumentCache:
    @pytest.mark.parametrize("seed", range(20))
    def test_same_frames_as_without_the_cache(self, seed):
        """Random inserts, updates (moves, private toggles, unsets, truncations), replaces and deletes
        give byte-identical frames with the cache, a tiny one, and none."""
        cached, tiny, uncached = producer(), producer(cache_bytes=300), producer(cache_bytes=0)
        writer = Writer(seed)
        published = 0
        for _ in range(150):
            change = writer.change()
            expected = rendered(uncached, change)
            assert rendered(cached, change) == expected
            assert rendered(tiny, change) == expected
            published += len(expected)
        assert published > 50
        assert len(cached.converter.images) > 0
        assert len(uncached.converter.images) == 0
        # The memo holds projections of kept images only, however many were let go.
        assert cached.pipeline.remembered <= len(cached.converter.images)
        assert tiny.pipeline.remembered <= len(tiny.converter.images)

    def test_updates_reuse_the_kept_image(self):
        """The second update of a document starts from the image the first one left: the pre-image
        the event carries is not converted again."""
        cached = producer()
        writer = Writer(1)
        insert = writer.change()
        cached.drafts(insert)
        document_id = insert["documentKey"]["_id"]
        first = writer._update(document_id, copy.deepcopy(writer.documents[document_id]))
        cached.drafts(first)
        assert len(cached.converter.images) == 1
        second = writer._event(
            "update",
            document_id,
            updateDescription={"updatedFields": {"title": "second"}, "removedFields": [], "disambiguatedPaths": {}},
            fullDocumentBeforeChange={"_id": document_id, "flowId": "garbage the cache ignores"},
        )
        drafts = cached.drafts(second)
        assert drafts
        for draft in drafts:
            assert b"garbage" not in draft.payload

    @pytest.mark.parametrize(
        ("first_id", "second_id"),
        [
            (ObjectId("65f0a1b2c3d4e5f601234567"), "65f0a1b2c3d4e5f601234567"),
            (True, 1),
            (Int64(2**60), str(2**60)),
        ],
        ids=["objectid-vs-hex-string", "true-vs-1", "int64-vs-string"],
    )
    def test_ids_that_convert_alike_are_different_documents(self, first_id, second_id):
        """Two documents whose _ids convert to the same JSON value never share a kept image: one
        document's content cannot reach the other's flow."""
        cached, uncached = producer(), producer(cache_bytes=0)
        writer = Writer(4)
        first = {"_id": first_id, "flowId": "alice", "notes": "alice-only"}
        second = {"_id": second_id, "flowId": "bob", "notes": "bob's"}
        # The second document existed before: its first event here is an update.
        updates = [
            writer._event(
                "update",
                document["_id"],
                updateDescription={
                    "updatedFields": {"flowId": flow},
                    "removedFields": [],
                    "disambiguatedPaths": {},
                },
                fullDocumentBeforeChange=document,
            )
            for document, flow in ((first, "alice"), (second, "carol"))
        ]
        for change in updates:
            frames = rendered(cached, change)
            assert frames == rendered(uncached, change)
        assert frames and all(b"alice-only" not in frame for _, frame in frames)

    @pytest.mark.parametrize("disambiguated", [False, True])
    def test_a_dotted_key_without_disambiguated_paths_is_not_kept(self, disambiguated):
        """Without disambiguatedPaths a dotted key may name a field with dots: the post-image built from
        it may be wrong, so it is not kept (MongoDB 6.0); with them (6.1+) it is."""
        cached = producer()
        writer = Writer(5)
        insert = writer.change()
        cached.drafts(insert)
        document_id = insert["documentKey"]["_id"]
        description: dict[str, Any] = {"updatedFields": {"position.x": 3.0}, "removedFields": []}
        if disambiguated:
            description["disambiguatedPaths"] = {}
        update = writer._event(
            "update",
            document_id,
            updateDescription=description,
            fullDocumentBeforeChange=copy.deepcopy(writer.documents[document_id]),
        )
        assert cached.drafts(update)
        assert len(cached.converter.images) == (1 if disambiguated else 0)
        assert cached.pipeline.remembered == len(cached.converter.images)

    def test_history_refuses_a_pipeline_with_a_memo(self):
        """Catch-ups keep no documents: a pipeline that remembers them is refused."""
        settings = load_settings(environ={})
        remembering = Pipeline(settings.routes, memo_documents=10)
        with pytest.raises(ValueError, match="must not have a memo"):
            History(None, settings.routes, remembering, Metrics(), max_await_time_ms=1, max_event_bytes=1024)

    def test_reset_and_restart_forget_every_image(self):
        """After a reset (position lost, change skipped, collection dropped) or a reopened stream the
        cache is empty: a missed change must never leave a stale image."""
        cached = producer()
        writer = Writer(2)
        for _ in range(30):
            cached.drafts(writer.change())
        assert len(cached.converter.images) > 0
        cached.reset("test")
        assert len(cached.converter.images) == 0
        for _ in range(30):
            cached.drafts(writer.change())
        assert len(cached.converter.images) > 0
        cached.on_start(None, None)
        assert len(cached.converter.images) == 0

    async def test_history_neither_reads_nor_writes_the_cache(self):
        """Catch-ups replay older changes through their own path: they must not touch the live images."""
        cached = producer()
        writer = Writer(3)
        for _ in range(30):
            cached.drafts(writer.change())
        images = cached.converter.images
        kept = {key: images.get("flow_nodes", key) for key in map(identity_key, writer.keys())}
        replayed = [writer.change() for _ in range(20)]
        history = History(
            ReplayingDatabase(replayed),
            load_settings(environ={}).routes,
            Pipeline(load_settings(environ={}).routes),
            Metrics(),
            max_await_time_ms=10,
            max_event_bytes=1 << 20,
        )
        frames = [frame for flow_id in FLOWS async for frame in history.frames_after({}, flow_id, until=EVERYTHING)]
        assert frames, "the history path published the replayed changes"
        assert {key: images.get("flow_nodes", key) for key in kept} == kept


class ReplayingDatabase:
    """A database whose history streams return ``changes``, whatever the position."""

    def __init__(self, changes: list[dict[str, Any]]) -> None:
        self.changes = changes

    @contextlib.asynccontextmanager
    async def stream(self, pipeline: Any, **options: Any) -> Any:
        remaining = list(self.changes)

        class Stream:
            async def try_next(self) -> Any:
                return remaining.pop(0) if remaining else None

        yield Stream()


EVERYTHING = Clock((2_000_000_000, 0))
"""A clock after every change the writer makes: all of them were published before it."""
