"""Convert stage: raw change events (BSON values) to ``filters.ChangeEvent`` (plain values).

The live stream's conversion keeps the latest post-image of recently updated documents
(``PostImages``): the next update of a document starts from it instead of converting its pre-image,
and its own post-image becomes the one kept. History and snapshots convert plainly
(``convert_change``): they replay older changes for one client and must not touch the live images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from filters import ChangeEvent, PatchConflictError, Route, apply_update

from ..codec import identity_key, to_change_event
from ..mongo import Change
from .images import REMEASURE_EVERY, PostImages


@dataclass(frozen=True, slots=True)
class Converted:
    """A converted change; ``kept`` when its post-image is now the document's kept image, which the
    filter stage may then remember the projection of."""

    event: ChangeEvent
    kept: bool = False


def flow_id_paths(routes: Sequence[Route]) -> dict[str, tuple[str, ...]]:
    """Each routed collection's flow id path, split at its dots."""
    return {route.collection: tuple(route.flow_id_path.split(".")) for route in routes}


def convert_change(change: Change, flow_id_paths: Mapping[str, Sequence[str]]) -> ChangeEvent:
    """Convert a data change without kept images (history, previews)."""
    collection = str(change.get("ns", {}).get("coll", ""))
    return to_change_event(change, flow_id_path=flow_id_paths.get(collection))


class LiveConverter:
    """Converts the live stream's data changes, keeping post-images between updates of a document."""

    __slots__ = ("_flow_id_paths", "images")

    def __init__(self, routes: Sequence[Route], images: PostImages) -> None:
        self._flow_id_paths = flow_id_paths(routes)
        self.images = images

    def clear(self) -> None:
        """Forget every kept image: changes may have been missed (the stream reopened or reset)."""
        self.images.clear()

    def convert(self, change: Change) -> Converted:
        """Convert a data change; raises ``KeyError``/``TypeError``/``ValueError`` for a malformed one."""
        collection = str(change.get("ns", {}).get("coll", ""))
        flow_id_path = self._flow_id_paths.get(collection)
        images = self.images
        operation = change.get("operationType")
        # An inserted document has no image kept: its id was deleted (which let the image go) or never
        # used. Log chunks, the most frequent events, are inserts.
        key = identity_key(change.get("documentKey")) if images.enabled and operation != "insert" else None
        if key is None:
            return Converted(to_change_event(change, flow_id_path=flow_id_path))
        if operation != "update":
            images.discard(collection, key)
            return Converted(to_change_event(change, flow_id_path=flow_id_path))
        description = change.get("updateDescription")
        # Without disambiguatedPaths (MongoDB 6.0) a dotted key may name a field with dots: the
        # post-image built from it may be wrong, and must not become the next pre-image.
        exact = isinstance(description, Mapping) and not _ambiguous(description)
        kept = images.get(collection, key) if exact and change.get("fullDocumentBeforeChange") is not None else None
        event = to_change_event(change, flow_id_path=flow_id_path, before=None if kept is None else kept.document)
        before, update = event.full_document_before_change, event.update_description
        if before is None or update is None:
            images.discard(collection, key)
            return Converted(event)
        try:
            after = apply_update(before, update)
        except PatchConflictError:
            images.discard(collection, key)
            return Converted(event)
        event = ChangeEvent(
            collection=event.collection,
            operation=event.operation,
            document_id=event.document_id,
            full_document=after,
            full_document_before_change=before,
            update_description=update,
            cluster_time=event.cluster_time,
            wall_time=event.wall_time,
            document_key=event.document_key,
        )
        try:
            if kept is not None and kept.updates < REMEASURE_EVERY:
                size, updates = kept.size + len(orjson.dumps(update.updated_fields)), kept.updates + 1
            else:
                size, updates = len(orjson.dumps(after)), 0
        except (TypeError, orjson.JSONEncodeError):
            exact = False
        if not exact or size > images.max_bytes:
            images.discard(collection, key)
            return Converted(event)
        images.put(collection, key, after, size, updates)
        return Converted(event, kept=True)


def _ambiguous(description: Mapping[str, Any]) -> bool:
    if "disambiguatedPaths" in description:
        return False
    keys = [
        *(description.get("updatedFields") or {}),
        *(description.get("removedFields") or ()),
        *(entry.get("field", "") for entry in description.get("truncatedArrays") or () if isinstance(entry, Mapping)),
    ]
    return any(isinstance(key, str) and "." in key for key in keys)
