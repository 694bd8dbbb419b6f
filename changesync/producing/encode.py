"""Encode stage: published events to drafts, once per event and flow (the hub gives them their ids).

An event larger than ``max_event_bytes`` becomes a draft that stands for it (``tooLarge``: the
client refetches the document); one that JSON cannot represent is left out and reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from filters import ChangeEvent

from ..frames import Draft, change_draft


@dataclass(slots=True)
class Encoded:
    drafts: list[Draft] = field(default_factory=list)
    too_large: int = 0
    """Drafts that stand for an event over the size limit."""
    errors: list[str] = field(default_factory=list)
    """Why each event left out could not be encoded."""


def encode(events: Iterable[ChangeEvent], *, max_event_bytes: int) -> Encoded:
    encoded = Encoded()
    for event in events:
        try:
            draft, too_large = change_draft(event, max_bytes=max_event_bytes)
        except (TypeError, ValueError, orjson.JSONEncodeError) as exc:
            encoded.errors.append(str(exc))
            continue
        encoded.drafts.append(draft)
        encoded.too_large += too_large
    return encoded
