/**
 * The flow's log output: chunk documents by execution and node (`logs`), the text they add up to
 * (`logText`, seeded from the SNAPSHOT), and which executions are kept (`logExecutions`).
 *
 * Appending a chunk costs O(1), amortised: the node's chunk array is grown in place instead of
 * copied. Each state that holds an array records how long it was then, so an append to an older
 * state (a fork, with `reduce`) copies that state's prefix instead of growing what a later state holds.
 * Everything else is copied on write, as in the rest of the state.
 */
import type { DocumentId, FlowDocument, SnapshotLog } from "./generated/events.js";
import { type Table, documentKey } from "./documents.js";

/** One node's output as text: the chunks' text joined, oldest first. */
export interface LogText {
  readonly text: string;
  /** True when older output is missing: the SNAPSHOT carried only its tail. */
  readonly truncated: boolean;
}

export interface LogTables {
  /** Chunk documents in arrival order, by `String(executionId)`, then by `String(nodeId)`. */
  readonly logs: Table<Table<readonly FlowDocument[]>>;
  /** The text by execution and node, same keys as `logs`: the SNAPSHOT's text, then every chunk inserted since. */
  readonly logText: Table<Table<LogText>>;
  /** The executions held in `logs` and `logText`, oldest first (by when this client first saw them). */
  readonly logExecutions: readonly string[];
}

export interface LogOptions {
  /** How many executions' logs to keep, the newest first seen (default 5). */
  readonly keepExecutions?: number;
  /** The chunk field whose string value `logText` joins (default `chunk`). */
  readonly logTextField?: string;
}

export const DEFAULT_KEEP_EXECUTIONS = 5;
export const DEFAULT_LOG_TEXT_FIELD = "chunk";

/** For each `logs[execution]` table: its arrays' lengths when the table was made (see the module docs). */
const heldLengths = new WeakMap<object, Readonly<Record<string, number>>>();

function logPlace(document: FlowDocument): [string, string] {
  return [String(document["executionId"] ?? ""), String(document["nodeId"] ?? "")];
}

function withChunks<S extends LogTables>(state: S, execution: string, node: string, chunks: readonly FlowDocument[]): S {
  const previous = state.logs[execution] ?? {};
  const nodes: Record<string, readonly FlowDocument[]> = { ...previous };
  const lengths: Record<string, number> = { ...heldLengths.get(previous) };
  if (chunks.length) {
    nodes[node] = chunks;
    lengths[node] = chunks.length;
  } else {
    delete nodes[node];
    delete lengths[node];
  }
  heldLengths.set(nodes, lengths);
  const logs = { ...state.logs };
  if (Object.keys(nodes).length) logs[execution] = nodes;
  else delete logs[execution];
  return { ...state, logs };
}

/** Notes `execution` as seen; drops the oldest executions beyond `keep`. */
function withExecution<S extends LogTables>(state: S, execution: string, options: LogOptions): S {
  if (state.logExecutions.includes(execution)) return state;
  const logExecutions = [...state.logExecutions, execution];
  const dropped = logExecutions.splice(0, Math.max(0, logExecutions.length - (options.keepExecutions ?? DEFAULT_KEEP_EXECUTIONS)));
  if (dropped.length === 0) return { ...state, logExecutions };
  const logs = { ...state.logs };
  const logText = { ...state.logText };
  for (const old of dropped) {
    delete logs[old];
    delete logText[old];
  }
  return { ...state, logs, logText, logExecutions };
}

function withText<S extends LogTables>(state: S, execution: string, node: string, document: FlowDocument, options: LogOptions): S {
  const value = document[options.logTextField ?? DEFAULT_LOG_TEXT_FIELD];
  if (typeof value !== "string") return state;
  const texts = state.logText[execution] ?? {};
  const current = texts[node];
  const next: LogText = { text: (current?.text ?? "") + value, truncated: current?.truncated ?? false };
  return { ...state, logText: { ...state.logText, [execution]: { ...texts, [node]: next } } };
}

/** A new chunk: appended to its node's chunks, its text to the node's text. */
export function appendChunk<S extends LogTables>(state: S, document: FlowDocument, options: LogOptions): S {
  const [execution, node] = logPlace(document);
  state = withExecution(state, execution, options);
  const nodes = state.logs[execution];
  const held = nodes?.[node];
  const length = nodes === undefined ? undefined : heldLengths.get(nodes)?.[node];
  // No later state has grown the array: grow it in place. Otherwise copy this state's prefix.
  let chunks: FlowDocument[];
  if (held !== undefined && length === held.length) chunks = held as FlowDocument[];
  else chunks = held === undefined ? [] : held.slice(0, length ?? held.length);
  chunks.push(document);
  return withText(withChunks(state, execution, node, chunks), execution, node, document, options);
}

function findChunk(state: LogTables, key: string): { execution: string; node: string; index: number } | undefined {
  for (const [execution, nodes] of Object.entries(state.logs)) {
    const lengths = heldLengths.get(nodes);
    for (const [node, chunks] of Object.entries(nodes)) {
      const end = lengths?.[node] ?? chunks.length;
      for (let index = 0; index < end; index++) {
        if (documentKey(chunks[index]?.["_id"] as DocumentId) === key) return { execution, node, index };
      }
    }
  }
  return undefined;
}

/** The chunks of `execution`/`node` as this state holds them (a later state may have grown the array). */
function chunksOf(state: LogTables, execution: string, node: string): readonly FlowDocument[] {
  const nodes = state.logs[execution];
  const chunks = nodes?.[node] ?? [];
  const length = nodes === undefined ? undefined : heldLengths.get(nodes)?.[node];
  return length === undefined || length === chunks.length ? chunks : chunks.slice(0, length);
}

/** The chunk document with this `_id` key, if this state holds it. */
export function chunkByKey(state: LogTables, key: string): FlowDocument | undefined {
  const found = findChunk(state, key);
  return found && chunksOf(state, found.execution, found.node)[found.index];
}

/** A chunk changed (replace, update): replaced where it is, or appended. `logText` is left as it is. */
export function putChunk<S extends LogTables>(state: S, key: string, document: FlowDocument, options: LogOptions): S {
  const [execution, node] = logPlace(document);
  const found = findChunk(state, key);
  if (found !== undefined && (found.execution !== execution || found.node !== node)) state = removeChunk(state, key);
  const chunks = chunksOf(state, execution, node);
  if (found !== undefined && found.execution === execution && found.node === node) {
    return withChunks(state, execution, node, chunks.map((chunk, i) => (i === found.index ? document : chunk)));
  }
  return withChunks(withExecution(state, execution, options), execution, node, [...chunks, document]);
}

/** A chunk was deleted. `logText` is left as it is. */
export function removeChunk<S extends LogTables>(state: S, key: string): S {
  const found = findChunk(state, key);
  if (found === undefined) return state;
  const { execution, node, index } = found;
  state = withChunks(state, execution, node, chunksOf(state, execution, node).filter((_, i) => i !== index));
  if (execution in state.logs || execution in state.logText) return state;
  return { ...state, logExecutions: state.logExecutions.filter((name) => name !== execution) };
}

/** A SNAPSHOT's `logs`: each listed execution's text replaces what `logText` held of it. */
export function seedLogText<S extends LogTables>(
  state: S,
  snapshotLogs: Readonly<Record<string, SnapshotLog | undefined>>,
  options: LogOptions,
): S {
  for (const entry of Object.values(snapshotLogs)) {
    if (entry == null || entry.executionId == null) continue;
    const execution = String(entry.executionId);
    const texts: Record<string, LogText> = {};
    for (const { nodeId, text, truncated } of entry.nodes ?? []) {
      texts[String(nodeId ?? "")] = { text: typeof text === "string" ? text : "", truncated: Boolean(truncated) };
    }
    state = withExecution(state, execution, options);
    if (state.logExecutions.includes(execution)) state = { ...state, logText: { ...state.logText, [execution]: texts } };
  }
  return state;
}
