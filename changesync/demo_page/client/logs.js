// Compiled from clients/typescript/src; written by `npm run build:demo-page`. Do not edit.
import { documentKey } from "./documents.js";
export const DEFAULT_KEEP_EXECUTIONS = 5;
export const DEFAULT_LOG_TEXT_FIELD = "chunk";
/** For each `logs[execution]` table: its arrays' lengths when the table was made (see the module docs). */
const heldLengths = new WeakMap();
function logPlace(document) {
    return [String(document["executionId"] ?? ""), String(document["nodeId"] ?? "")];
}
function withChunks(state, execution, node, chunks) {
    const previous = state.logs[execution] ?? {};
    const nodes = { ...previous };
    const lengths = { ...heldLengths.get(previous) };
    if (chunks.length) {
        nodes[node] = chunks;
        lengths[node] = chunks.length;
    }
    else {
        delete nodes[node];
        delete lengths[node];
    }
    heldLengths.set(nodes, lengths);
    const logs = { ...state.logs };
    if (Object.keys(nodes).length)
        logs[execution] = nodes;
    else
        delete logs[execution];
    return { ...state, logs };
}
/** Notes `execution` as seen; drops the oldest executions beyond `keep`. */
function withExecution(state, execution, options) {
    if (state.logExecutions.includes(execution))
        return state;
    const logExecutions = [...state.logExecutions, execution];
    const dropped = logExecutions.splice(0, Math.max(0, logExecutions.length - (options.keepExecutions ?? DEFAULT_KEEP_EXECUTIONS)));
    if (dropped.length === 0)
        return { ...state, logExecutions };
    const logs = { ...state.logs };
    const logText = { ...state.logText };
    for (const old of dropped) {
        delete logs[old];
        delete logText[old];
    }
    return { ...state, logs, logText, logExecutions };
}
function withText(state, execution, node, document, options) {
    const value = document[options.logTextField ?? DEFAULT_LOG_TEXT_FIELD];
    if (typeof value !== "string")
        return state;
    const texts = state.logText[execution] ?? {};
    const current = texts[node];
    const next = { text: (current?.text ?? "") + value, truncated: current?.truncated ?? false };
    return { ...state, logText: { ...state.logText, [execution]: { ...texts, [node]: next } } };
}
/** A new chunk: appended to its node's chunks, its text to the node's text. */
export function appendChunk(state, document, options) {
    const [execution, node] = logPlace(document);
    state = withExecution(state, execution, options);
    const nodes = state.logs[execution];
    const held = nodes?.[node];
    const length = nodes === undefined ? undefined : heldLengths.get(nodes)?.[node];
    // No later state has grown the array: grow it in place. Otherwise copy this state's prefix.
    let chunks;
    if (held !== undefined && length === held.length)
        chunks = held;
    else
        chunks = held === undefined ? [] : held.slice(0, length ?? held.length);
    chunks.push(document);
    return withText(withChunks(state, execution, node, chunks), execution, node, document, options);
}
function findChunk(state, key) {
    for (const [execution, nodes] of Object.entries(state.logs)) {
        const lengths = heldLengths.get(nodes);
        for (const [node, chunks] of Object.entries(nodes)) {
            const end = lengths?.[node] ?? chunks.length;
            for (let index = 0; index < end; index++) {
                if (documentKey(chunks[index]?.["_id"]) === key)
                    return { execution, node, index };
            }
        }
    }
    return undefined;
}
/** The chunks of `execution`/`node` as this state holds them (a later state may have grown the array). */
function chunksOf(state, execution, node) {
    const nodes = state.logs[execution];
    const chunks = nodes?.[node] ?? [];
    const length = nodes === undefined ? undefined : heldLengths.get(nodes)?.[node];
    return length === undefined || length === chunks.length ? chunks : chunks.slice(0, length);
}
/** The chunk document with this `_id` key, if this state holds it. */
export function chunkByKey(state, key) {
    const found = findChunk(state, key);
    return found && chunksOf(state, found.execution, found.node)[found.index];
}
/** A chunk changed (replace, update): replaced where it is, or appended. `logText` is left as it is. */
export function putChunk(state, key, document, options) {
    const [execution, node] = logPlace(document);
    const found = findChunk(state, key);
    if (found !== undefined && (found.execution !== execution || found.node !== node))
        state = removeChunk(state, key);
    const chunks = chunksOf(state, execution, node);
    if (found !== undefined && found.execution === execution && found.node === node) {
        return withChunks(state, execution, node, chunks.map((chunk, i) => (i === found.index ? document : chunk)));
    }
    return withChunks(withExecution(state, execution, options), execution, node, [...chunks, document]);
}
/** A chunk was deleted. `logText` is left as it is. */
export function removeChunk(state, key) {
    const found = findChunk(state, key);
    if (found === undefined)
        return state;
    const { execution, node, index } = found;
    state = withChunks(state, execution, node, chunksOf(state, execution, node).filter((_, i) => i !== index));
    if (execution in state.logs || execution in state.logText)
        return state;
    return { ...state, logExecutions: state.logExecutions.filter((name) => name !== execution) };
}
/** A SNAPSHOT's `logs`: each listed execution's text replaces what `logText` held of it. */
export function seedLogText(state, snapshotLogs, options) {
    for (const entry of Object.values(snapshotLogs)) {
        if (entry == null || entry.executionId == null)
            continue;
        const execution = String(entry.executionId);
        const texts = {};
        for (const { nodeId, text, truncated } of entry.nodes ?? []) {
            texts[String(nodeId ?? "")] = { text: typeof text === "string" ? text : "", truncated: Boolean(truncated) };
        }
        state = withExecution(state, execution, options);
        if (state.logExecutions.includes(execution))
            state = { ...state, logText: { ...state.logText, [execution]: texts } };
    }
    return state;
}
