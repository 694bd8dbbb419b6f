// Compiled from clients/typescript/src; written by `npm run build:demo-page`. Do not edit.
import { applyPatch } from "./json-patch.js";
/** Something went wrong; `kind` says what. Connection and token errors are retried. */
export class FlowEventsError extends Error {
    kind;
    name = "FlowEventsError";
    constructor(message, kind, options) {
        super(message, options);
        this.kind = kind;
    }
}
export const DEFAULT_LOG_EVENT_TYPES = ["LOG_STREAM"];
export function initialState(flowId) {
    return {
        flowId,
        status: "connecting",
        error: null,
        lastEventId: null,
        loaded: false,
        collections: {},
        logs: {},
        eventTypes: {},
        truncated: {},
        stale: {},
        skippedLogChunks: 0,
    };
}
/** The key of a document in `FlowState.collections`: string ids as they are, other ids as JSON. */
export function documentKey(id) {
    return typeof id === "string" ? id : JSON.stringify(id ?? null);
}
/**
 * The documents of one collection. The order carries no meaning: it is insertion order, except that
 * integer-like keys come first (JavaScript object order); sort by a field of your own.
 */
export function documentsOf(state, collection) {
    return Object.values(state.collections[collection] ?? {});
}
/** Returns the state after `payload`. */
export function reduce(state, payload, options) {
    switch (payload.type) {
        case "SNAPSHOT":
            return loadSnapshot(state, payload);
        case "RESYNC":
            return payload.resumable ? state : clearData(state);
        default:
            return applyChange(state, payload, options);
    }
}
/** Empty data (after a non-resumable RESYNC): keeps the connection fields. */
export function clearData(state) {
    const { flowId, status, error, lastEventId } = state;
    return { ...initialState(flowId), status, error, lastEventId };
}
function loadSnapshot(state, snapshot) {
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
    return { ...state, loaded: true, collections, eventTypes, truncated, stale };
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
        state = isLog ? removeLog(state, key) : setDocument(state, payload.collection, key, null);
        return withStale(state, payload.collection, key, false);
    }
    let next = payload.document;
    const isStale = state.stale[payload.collection]?.includes(key) ?? false;
    if (payload.operation === "update" && payload.patch !== null && !isStale) {
        const current = isLog ? findLog(state, key)?.document : state.collections[payload.collection]?.[key];
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
        state = appendLog(state, next); // the common case: no search
    else
        state = putLog(state, key, next);
    return withStale(state, payload.collection, key, false);
}
function setDocument(state, collection, key, document) {
    const documents = { ...(state.collections[collection] ?? {}) };
    if (document === null) {
        if (!(key in documents))
            return state;
        delete documents[key];
    }
    else {
        documents[key] = document;
    }
    return { ...state, collections: { ...state.collections, [collection]: documents } };
}
function logPlace(document) {
    return [String(document["executionId"] ?? ""), String(document["nodeId"] ?? "")];
}
function findLog(state, key) {
    for (const [execution, nodes] of Object.entries(state.logs)) {
        for (const [node, chunks] of Object.entries(nodes)) {
            const index = chunks.findIndex((chunk) => documentKey(chunk["_id"]) === key);
            if (index >= 0)
                return { execution, node, index, document: chunks[index] };
        }
    }
    return undefined;
}
function withChunks(state, execution, node, chunks) {
    const nodes = { ...(state.logs[execution] ?? {}) };
    if (chunks.length)
        nodes[node] = chunks;
    else
        delete nodes[node];
    const logs = { ...state.logs };
    if (Object.keys(nodes).length)
        logs[execution] = nodes;
    else
        delete logs[execution];
    return { ...state, logs };
}
function appendLog(state, document) {
    const [execution, node] = logPlace(document);
    return withChunks(state, execution, node, [...(state.logs[execution]?.[node] ?? []), document]);
}
/** Appends a chunk; a chunk already held (same `_id`, same execution and node) is replaced in place. */
function putLog(state, key, document) {
    const [execution, node] = logPlace(document);
    const found = findLog(state, key);
    if (found !== undefined && (found.execution !== execution || found.node !== node)) {
        state = removeLog(state, key);
    }
    const chunks = state.logs[execution]?.[node] ?? [];
    const index = found !== undefined && found.execution === execution && found.node === node ? found.index : -1;
    const next = index >= 0 ? chunks.map((chunk, i) => (i === index ? document : chunk)) : [...chunks, document];
    return withChunks(state, execution, node, next);
}
function removeLog(state, key) {
    const found = findLog(state, key);
    if (found === undefined)
        return state;
    const chunks = state.logs[found.execution]?.[found.node] ?? [];
    return withChunks(state, found.execution, found.node, chunks.filter((_, i) => i !== found.index));
}
