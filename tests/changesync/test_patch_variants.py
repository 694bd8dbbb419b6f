"""Patch-only updates (``?updates=patch``): both variants encoded once, each subscriber takes its own."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from changesync.delivering.broadcast import Broker, make_compactor
from changesync.frames import MESSAGE_OVERHEAD_BYTES, Frame, change_draft
from changesync.hub.replay import ReplayBuffer
from changesync.hub.wire import decode_blob
from filters import ChangeEvent

BOARD = {"_id": "f1", "nodes": [{"id": f"n{i}", "position": {"x": i, "y": 0}} for i in range(20)]}
DRAG = ({"op": "replace", "path": "/nodes/3/position/x", "value": 99},)


def event(**changes: object) -> ChangeEvent:
    base = ChangeEvent(
        collection="flowboards",
        operation="update",
        document_id="f1",
        full_document=BOARD,
        cluster_time=(1795715181, 1),
        wall_time="2026-11-26T17:46:21.381Z",
        event_type="SYNC_CANVAS",
        flow_id="f1",
        patch=DRAG,
    )
    return dataclasses.replace(base, **changes)


def data_of(message: bytes) -> dict:
    return orjson.loads(message.partition(b"\ndata: ")[2])


def framed(change: ChangeEvent, event_id: str = "p~e.1", *, max_bytes: int = 1 << 20) -> Frame:
    draft, _ = change_draft(change, max_bytes=max_bytes)
    return draft.framed(event_id, seq=1)


class TestVariants:
    def test_an_update_with_a_patch_has_both_variants(self):
        """The full variant keeps document and patch; the patch-only one drops the document and says so."""
        frame = framed(event())
        full, patch_only = data_of(frame.data), data_of(frame.patch_data)
        assert full["document"] == BOARD and full["patch"] == list(DRAG) and "patchOnly" not in full
        assert patch_only == {**full, "document": None, "patchOnly": True}
        assert frame.patch_data.startswith(b"event: SYNC_CANVAS\nid: p~e.1\ndata: ")
        assert len(frame.patch_data) < len(frame.data) / 3

    @pytest.mark.parametrize(
        "changes",
        [
            {"operation": "insert", "patch": None},
            {"operation": "replace", "patch": None},
            {"operation": "delete", "patch": None, "full_document": None},
            {"patch": None},  # an update that cannot be expressed as a patch: the whole document
            {"full_document": None},  # the post-image is unknown: the patch is all there is
        ],
    )
    def test_other_frames_have_one_variant(self, changes):
        """Inserts, replaces, deletes and updates without a patch or a document are the same for everyone."""
        assert framed(event(**changes)).patch_data == b""

    def test_a_patch_still_fits_where_the_document_does_not(self):
        """Over the size limit, full subscribers are told to refetch; patch-only ones still get the patch."""
        limit = len(orjson.dumps(BOARD)) + MESSAGE_OVERHEAD_BYTES
        draft, too_large = change_draft(event(), max_bytes=limit)
        frame = draft.framed("p~e.1")
        assert too_large
        assert data_of(frame.data)["tooLarge"] is True
        assert data_of(frame.patch_data)["patch"] == list(DRAG)

    def test_a_patch_over_the_limit_leaves_the_full_variant_for_everyone(self):
        """When even the patch is too large, the frame standing for the event goes to every subscriber."""
        big = ({"op": "replace", "path": "/name", "value": "x" * 4096},)
        draft, too_large = change_draft(event(patch=big), max_bytes=2048)
        assert too_large and draft.patch_payload == b""


class TestSubscribers:
    def test_each_subscriber_takes_its_variant_of_the_same_frame(self):
        """One frame, queued once per subscriber: full and patch-only subscribers read different bytes."""
        broker = Broker(max_queue=10)
        full, patch_only = broker.subscribe("f1"), broker.subscribe("f1")
        patch_only.patch_only = True
        update, insert = framed(event()), framed(event(operation="insert", patch=None), "p~e.2")
        assert broker.publish(update) == 2 and broker.publish(insert) == 2
        assert full.drain() == update.data + insert.data
        assert patch_only.drain() == update.patch_data + insert.data
        assert patch_only.encoded(update) is update.patch_data
        assert full.encoded(update) is update.data

    def test_a_coalesced_update_is_the_whole_document_for_patch_only_subscribers(self):
        """Shedding a queue drops the patches in between, so the coalesced change carries the document."""
        compact = make_compactor({"flowboards": "coalesce"})
        first = framed(event(), "p1~e.1")
        latest = framed(event(full_document={**BOARD, "name": "late"}), "p2~e.2")
        (coalesced,) = compact([first, latest])
        assert coalesced.patch_data == b""
        payload = data_of(coalesced.data)
        assert (payload["operation"], payload["coalesced"], payload["document"]["name"]) == ("replace", 2, "late")
        subscriber = Broker(max_queue=10).subscribe("f1")
        subscriber.patch_only = True
        assert subscriber.encoded(coalesced) == coalesced.data

    def test_the_replay_buffer_counts_both_variants(self):
        """Memory accounting includes the patch-only bytes a frame holds."""
        replay = ReplayBuffer(per_flow=10, max_bytes=1 << 20)
        frame = replay.record(framed(event()))
        assert replay.size_bytes == len(frame.data) + len(frame.patch_data)


class TestWire:
    @staticmethod
    def blob(frame: Frame, *, with_length: bool = True) -> bytes:
        header = [frame.flow_id, frame.event_type, frame.position, frame.collection, frame.operation]
        header += [frame.document_key, frame.seq, 0, 1795715181, 1]
        if with_length:
            header.append(len(frame.data))
        return orjson.dumps(header) + b"\n" + frame.data + frame.patch_data

    def test_a_blob_carries_both_messages(self):
        """The header's message length splits the blob's two messages."""
        frame = framed(event())
        received = decode_blob("1-0", self.blob(frame))
        assert (received.frame.data, received.frame.patch_data) == (frame.data, frame.patch_data)

    def test_a_blob_without_the_length_has_one_message(self):
        """Blobs of ten header fields (one message) decode as before."""
        frame = framed(event(patch=None))
        received = decode_blob("1-0", self.blob(frame, with_length=False))
        assert (received.frame.data, received.frame.patch_data) == (frame.data, b"")
