// Compiled from clients/typescript/src; written by `npm run build:demo-page`. Do not edit.
import { jsonEqual } from "./json-patch.js";
import { documentKey } from "./documents.js";
export const DEFAULT_CANVAS_LAYOUT = {
    nodeCollections: ["flow_nodes"],
    edgeCollections: ["flow_edges"],
    nodesField: "nodes",
    edgesField: "edges",
};
const NONE = { added: [], changed: [], removed: [] };
/** An item's id: its `id` field, as a string; items without one are not tracked. */
function idOf(item) {
    if (typeof item !== "object" || item === null || Array.isArray(item))
        return null;
    const id = item["id"];
    return typeof id === "string" || typeof id === "number" ? String(id) : null;
}
function byId(items) {
    const map = new Map();
    if (!Array.isArray(items))
        return map;
    for (const item of items) {
        const id = idOf(item);
        if (id !== null)
            map.set(id, item);
    }
    return map;
}
/** Compares two arrays of items with `id`s; `undefined`/non-arrays count as empty. */
export function itemChanges(before, after) {
    if (before === after)
        return NONE;
    const previous = byId(before);
    const next = byId(after);
    const added = [];
    const changed = [];
    const removed = [];
    for (const [id, item] of next) {
        if (!previous.has(id))
            added.push(id);
        else if (!jsonEqual(previous.get(id), item))
            changed.push(id);
    }
    for (const id of previous.keys())
        if (!next.has(id))
            removed.push(id);
    return added.length || changed.length || removed.length ? { added, changed, removed } : NONE;
}
/** One document that is itself a node or an edge: added, changed or removed as a whole. */
function documentChange(before, after) {
    const id = idOf(after) ?? idOf(before) ?? documentKey(((after ?? before)?.["_id"] ?? null));
    if (before == null && after == null)
        return NONE;
    if (before == null)
        return { added: [id], changed: [], removed: [] };
    if (after == null)
        return { added: [], changed: [], removed: [id] };
    return before === after || jsonEqual(before, after) ? NONE : { added: [], changed: [id], removed: [] };
}
/**
 * The canvas change between two versions of one document of `collection` (`null`/`undefined`: it
 * did not exist). Documents of node and edge collections are items themselves; any other document
 * is a board whose node and edge arrays are compared.
 */
export function canvasChange(collection, documentId, operation, before, after, layout = DEFAULT_CANVAS_LAYOUT, stale = false) {
    const event = { collection, documentId, operation, stale };
    if (layout.nodeCollections.includes(collection)) {
        return { ...event, nodes: documentChange(before, after), edges: NONE };
    }
    if (layout.edgeCollections.includes(collection)) {
        return { ...event, nodes: NONE, edges: documentChange(before, after) };
    }
    return {
        ...event,
        nodes: itemChanges(before?.[layout.nodesField], after?.[layout.nodesField]),
        edges: itemChanges(before?.[layout.edgesField], after?.[layout.edgesField]),
    };
}
