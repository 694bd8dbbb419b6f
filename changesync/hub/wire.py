"""Frames and notices as the Redis hub carries them.

A frame travels as a *blob*: a JSON header line (its flow, type, id, document, sequence numbers,
cluster time and the length of its message), then the SSE message itself, then, for an update with a
patch, its patch-only message (``Frame.patch_data``). A header without the length (ten fields) is
of a frame with one message. Flow channels carry ``<stream id> <blob>``; history
streams hold the blob in their entries' field ``m``. The control channel carries JSON notices:
``["T", epoch, id, position, t, i, idle]`` (the stream's position after a batch), ``["R", epoch,
id, reason, seq]`` (a reset) and ``["E", epoch]`` (a new epoch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ..frames import Frame
from .clock import ClusterTime


@dataclass(frozen=True, slots=True)
class Received:
    """A frame from the hub, with what the edge's clock needs to know of it."""

    stream_id: str
    frame: Frame
    cluster_time: ClusterTime | None


def decode_blob(stream_id: str, blob: bytes) -> Received:
    """Raises ``ValueError`` for a blob that is not one of ours."""
    header, separator, data = blob.partition(b"\n")
    if not separator:
        raise ValueError("a blob has a header line")
    fields = orjson.loads(header)
    flow_id, event_type, identifier, collection, operation, key, seq, prev_seq, t, i = fields[:10]
    patch_data = b""
    if len(fields) > 10 and 0 < fields[10] < len(data):
        data, patch_data = data[: fields[10]], data[fields[10] :]
    frame = Frame(
        flow_id, event_type, data, identifier, collection, operation, key, int(seq), int(prev_seq), patch_data
    )
    return Received(stream_id, frame, (int(t), int(i)) if t else None)


def decode_message(message: bytes) -> Received:
    """A flow channel's message: ``<stream id> <blob>``."""
    stream_id, separator, blob = message.partition(b" ")
    if not separator:
        raise ValueError("a flow message starts with its stream id")
    return decode_blob(stream_id.decode("ascii"), blob)


def decode_notice(message: bytes) -> list[Any]:
    notice = orjson.loads(message)
    if not isinstance(notice, list) or not notice or notice[0] not in ("T", "R", "E"):
        raise ValueError("not a notice of the hub")
    return notice
