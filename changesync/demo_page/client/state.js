// Compiled from clients/typescript/src; written by `npm run build:demo-page`. Do not edit.
import { documentKey } from "./documents.js";
import { applyPatch } from "./json-patch.js";
import { appendChunk, chunkByKey, putChunk, removeChunk, seedLogText } from "./logs.js";
export { documentKey } from "./documents.js";
export const DEFAULT_LOG_EVENT_TYPES = ["LOG_STREAM"];
export function initialState(flowId) {
    return {
        flowId,
        status: "idle",
        error: null,
        lastEventId: null,
        loaded: false,
        resyncing: false,
        collections: {},
        logs: {},
        logText: {},
        logExecutions: [],
        eventTypes: {},
        truncated: {},
        stale: {},
        skippedLogChunks: 0,
        pendingWrites: 0,
    };
}
/**
 * The documents of one collection. The order carries no meaning: it is insertion order, except that
 * integer-like keys come first (JavaScript object order); sort by a field of your own.
 */
export function documentsOf(state, collection) {
    return Object.values(state.collections[collection] ?? {});
}
/**
 * Returns the state after `payload`. A SNAPSHOT replaces the collections it lists (all the data
 * after a non-resumable RESYNC); a non-resumable RESYNC marks the data `resyncing`, or clears it
 * when no SNAPSHOT follows (`snapshots: false`).
 */
export function reduce(state, payload, options) {
    switch (payload.type) {
        case "SNAPSHOT":
            return loadSnapshot(state.resyncing ? clearData(state) : state, payload, options);
        case "RESYNC":
            if (payload.resumable)
                return state;
            return options.snapshots === false ? clearData(state) : { ...state, resyncing: true };
        default:
            return applyChange(state, payload, options);
    }
}
/** Empty data (after a non-resumable RESYNC): keeps the connection fields and the count of local edits. */
export function clearData(state) {
    const { flowId, status, error, lastEventId, pendingWrites } = state;
    return { ...initialState(flowId), status, error, lastEventId, pendingWrites };
}
function loadSnapshot(state, snapshot, options) {
    const collections = { ...state.collections };
    const eventTypes = { ...state.eventTypes };
    const truncated = { ...state.truncated };
    const stale = { ...state.stale };
    for (const [name, entry] of Object.entries(snapshot.collections)) {
        if (entry === undefined)
            continue;
        const documents = {};
        for (const document of entry.documents)
            documents[documentKey(document["_id"])] = document;
        collections[name] = documents;
        eventTypes[name] = entry.eventType;
        truncated[name] = entry.truncated;
        delete stale[name];
    }
    // Older servers send no `logs`.
    const logs = snapshot.logs ?? {};
    for (const [name, entry] of Object.entries(logs))
        if (entry != null)
            eventTypes[name] = entry.eventType;
    return seedLogText({ ...state, loaded: true, resyncing: false, collections, eventTypes, truncated, stale }, logs, options);
}
function withStale(state, collection, key, isStale) {
    const current = state.stale[collection] ?? [];
    if (current.includes(key) === isStale)
        return state;
    const next = isStale ? [...current, key] : current.filter((k) => k !== key);
    const stale = { ...state.stale };
    if (next.length)
        stale[collection] = next;
    else
        delete stale[collection];
    return { ...state, stale };
}
function withEventType(state, collection, type) {
    return state.eventTypes[collection] === type ? state : { ...state, eventTypes: { ...state.eventTypes, [collection]: type } };
}
function applyChange(state, payload, options) {
    if (payload.operation === "skipped") {
        return { ...state, skippedLogChunks: state.skippedLogChunks + payload.skipped };
    }
    state = withEventType(state, payload.collection, payload.type);
    const key = documentKey(payload.documentId);
    const isLog = options.logEventTypes.includes(payload.type);
    if (payload.operation === "delete") {
        state = isLog ? removeChunk(state, key) : setDocument(state, payload.collection, key, null);
        return withStale(state, payload.collection, key, false);
    }
    let next = payload.document;
    const isStale = state.stale[payload.collection]?.includes(key) ?? false;
    if (payload.operation === "update" && payload.patch !== null && !isStale) {
        const current = isLog ? chunkByKey(state, key) : state.collections[payload.collection]?.[key];
        if (current !== undefined) {
            try {
                next = applyPatch(current, payload.patch);
            }
            catch {
                next = payload.document; // our copy is not the one the patch was made for
            }
        }
    }
    if (next === null)
        return withStale(state, payload.collection, key, true);
    if (!isLog)
        state = setDocument(state, payload.collection, key, next);
    else if (payload.operation === "insert")
        state = appendChunk(state, next, options); // the common case: no search
    else
        state = putChunk(state, key, next, options);
    return withStale(state, payload.collection, key, false);
}
/** Sets (or, with null, removes) one document of `collection`. */
export function setDocument(state, collection, key, document) {
    const held = state.collections[collection];
    if (document === null ? !(held !== undefined && key in held) : held?.[key] === document)
        return state;
    const documents = { ...(held ?? {}) };
    if (document === null)
        delete documents[key];
    else
        documents[key] = document;
    return { ...state, collections: { ...state.collections, [collection]: documents } };
}
