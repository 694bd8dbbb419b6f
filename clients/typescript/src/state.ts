/**
 * The flow's state, kept from the event stream by pure functions: every change returns a new
 * `FlowState` that shares whatever did not change with the previous one.
 */
import type {
  DataPayload,
  DocumentId,
  FlowDocument,
  Payload,
  ResyncPayload,
  SnapshotPayload,
} from "./generated/events.js";
import { applyPatch } from "./json-patch.js";

export type FlowStatus = "connecting" | "live" | "error";

export type FlowErrorKind = "connect" | "token" | "parse" | "refetch" | "listener";

/** Something went wrong; `kind` says what. Connection and token errors are retried. */
export class FlowEventsError extends Error {
  override readonly name = "FlowEventsError";
  constructor(
    message: string,
    readonly kind: FlowErrorKind,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

type Table<T> = Readonly<Record<string, T>>;

export interface FlowState {
  readonly flowId: string;
  /** `connecting` (first connection, or reconnecting after a drop), `live`, or `error` (retrying; see `error`). */
  readonly status: FlowStatus;
  /** Why `status` is `error`; null otherwise. */
  readonly error: FlowEventsError | null;
  /** The id of the last event received: where a new connection resumes. */
  readonly lastEventId: string | null;
  /** True once a SNAPSHOT has been loaded, until a non-resumable RESYNC clears the state. */
  readonly loaded: boolean;
  /** The flow's documents by collection, then by `documentKey(_id)`. LOG_STREAM documents are in `logs`. */
  readonly collections: Table<Table<FlowDocument>>;
  /** LOG_STREAM documents in arrival order, by `executionId`, then by `nodeId`. */
  readonly logs: Table<Table<readonly FlowDocument[]>>;
  /** The event type of each collection seen. */
  readonly eventTypes: Table<string>;
  /** Collections whose SNAPSHOT was cut at the route's limit: the flow has more documents than shown. */
  readonly truncated: Table<boolean>;
  /** Documents whose latest version is not known (too large to send, or no patch and no document): by collection. */
  readonly stale: Table<readonly string[]>;
  /** Log chunks the server dropped for this client while it was too slow (`operation: "skipped"`). */
  readonly skippedLogChunks: number;
}

export interface ReduceOptions {
  /** Event types whose documents are log chunks, appended to `logs` (default `["LOG_STREAM"]`). */
  readonly logEventTypes: readonly string[];
}

export const DEFAULT_LOG_EVENT_TYPES: readonly string[] = ["LOG_STREAM"];

export function initialState(flowId: string): FlowState {
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
export function documentKey(id: DocumentId | null | undefined): string {
  return typeof id === "string" ? id : JSON.stringify(id ?? null);
}

/**
 * The documents of one collection. The order carries no meaning: it is insertion order, except that
 * integer-like keys come first (JavaScript object order); sort by a field of your own.
 */
export function documentsOf(state: FlowState, collection: string): FlowDocument[] {
  return Object.values(state.collections[collection] ?? {});
}

/** Returns the state after `payload`. */
export function reduce(state: FlowState, payload: Payload, options: ReduceOptions): FlowState {
  switch (payload.type) {
    case "SNAPSHOT":
      return loadSnapshot(state, payload as SnapshotPayload);
    case "RESYNC":
      return (payload as ResyncPayload).resumable ? state : clearData(state);
    default:
      return applyChange(state, payload as DataPayload, options);
  }
}

/** Empty data (after a non-resumable RESYNC): keeps the connection fields. */
export function clearData(state: FlowState): FlowState {
  const { flowId, status, error, lastEventId } = state;
  return { ...initialState(flowId), status, error, lastEventId };
}

function loadSnapshot(state: FlowState, snapshot: SnapshotPayload): FlowState {
  const collections = { ...state.collections };
  const eventTypes = { ...state.eventTypes };
  const truncated = { ...state.truncated };
  const stale = { ...state.stale };
  for (const [name, entry] of Object.entries(snapshot.collections)) {
    if (entry === undefined) continue;
    const documents: Record<string, FlowDocument> = {};
    for (const document of entry.documents) documents[documentKey(document["_id"] as DocumentId)] = document;
    collections[name] = documents;
    eventTypes[name] = entry.eventType;
    truncated[name] = entry.truncated;
    delete stale[name];
  }
  return { ...state, loaded: true, collections, eventTypes, truncated, stale };
}

function withStale(state: FlowState, collection: string, key: string, isStale: boolean): FlowState {
  const current = state.stale[collection] ?? [];
  if (current.includes(key) === isStale) return state;
  const next = isStale ? [...current, key] : current.filter((k) => k !== key);
  const stale = { ...state.stale };
  if (next.length) stale[collection] = next;
  else delete stale[collection];
  return { ...state, stale };
}

function withEventType(state: FlowState, collection: string, type: string): FlowState {
  return state.eventTypes[collection] === type ? state : { ...state, eventTypes: { ...state.eventTypes, [collection]: type } };
}

function applyChange(state: FlowState, payload: DataPayload, options: ReduceOptions): FlowState {
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
  let next: FlowDocument | null = payload.document;
  const isStale = state.stale[payload.collection]?.includes(key) ?? false;
  if (payload.operation === "update" && payload.patch !== null && !isStale) {
    const current = isLog ? findLog(state, key)?.document : state.collections[payload.collection]?.[key];
    if (current !== undefined) {
      try {
        next = applyPatch(current, payload.patch);
      } catch {
        next = payload.document; // our copy is not the one the patch was made for
      }
    }
  }
  if (next === null) return withStale(state, payload.collection, key, true);
  if (!isLog) state = setDocument(state, payload.collection, key, next);
  else if (payload.operation === "insert") state = appendLog(state, next); // the common case: no search
  else state = putLog(state, key, next);
  return withStale(state, payload.collection, key, false);
}

function setDocument(state: FlowState, collection: string, key: string, document: FlowDocument | null): FlowState {
  const documents = { ...(state.collections[collection] ?? {}) };
  if (document === null) {
    if (!(key in documents)) return state;
    delete documents[key];
  } else {
    documents[key] = document;
  }
  return { ...state, collections: { ...state.collections, [collection]: documents } };
}

function logPlace(document: FlowDocument): [string, string] {
  return [String(document["executionId"] ?? ""), String(document["nodeId"] ?? "")];
}

function findLog(state: FlowState, key: string): { execution: string; node: string; index: number; document: FlowDocument } | undefined {
  for (const [execution, nodes] of Object.entries(state.logs)) {
    for (const [node, chunks] of Object.entries(nodes)) {
      const index = chunks.findIndex((chunk) => documentKey(chunk["_id"] as DocumentId) === key);
      if (index >= 0) return { execution, node, index, document: chunks[index] as FlowDocument };
    }
  }
  return undefined;
}

function withChunks(state: FlowState, execution: string, node: string, chunks: readonly FlowDocument[]): FlowState {
  const nodes = { ...(state.logs[execution] ?? {}) };
  if (chunks.length) nodes[node] = chunks;
  else delete nodes[node];
  const logs = { ...state.logs };
  if (Object.keys(nodes).length) logs[execution] = nodes;
  else delete logs[execution];
  return { ...state, logs };
}

function appendLog(state: FlowState, document: FlowDocument): FlowState {
  const [execution, node] = logPlace(document);
  return withChunks(state, execution, node, [...(state.logs[execution]?.[node] ?? []), document]);
}

/** Appends a chunk; a chunk already held (same `_id`, same execution and node) is replaced in place. */
function putLog(state: FlowState, key: string, document: FlowDocument): FlowState {
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

function removeLog(state: FlowState, key: string): FlowState {
  const found = findLog(state, key);
  if (found === undefined) return state;
  const chunks = state.logs[found.execution]?.[found.node] ?? [];
  return withChunks(state, found.execution, found.node, chunks.filter((_, i) => i !== found.index));
}
