"""Encode stage: published events to frames, once per event and flow.

An event larger than ``max_event_bytes`` becomes a frame that stands for it (``tooLarge``: the
client refetches the document); one that JSON cannot represent is left out and reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from filters import ChangeEvent

from ..frames import Frame, change_frame


@dataclass(slots=True)
class Encoded:
    frames: list[Frame] = field(default_factory=list)
    too_large: int = 0
    """Frames that stand for an event over the size limit."""
    errors: list[str] = field(default_factory=list)
    """Why each event left out could not be encoded."""


def encode(events: Iterable[ChangeEvent], position: str, *, max_event_bytes: int) -> Encoded:
    encoded = Encoded()
    for event in events:
        try:
            frame, too_large = change_frame(event, position, max_bytes=max_event_bytes)
        except (TypeError, ValueError, orjson.JSONEncodeError) as exc:
            encoded.errors.append(str(exc))
            continue
        encoded.frames.append(frame)
        encoded.too_large += too_large
    return encoded
