/**
 * The flow's state, kept from the event stream by pure functions: every change returns a new
 * `FlowState` that shares whatever did not change with the previous one. One exception, for speed:
 * a node's array in `logs` grows in place when a chunk is appended (see `logs.ts`).
 */
import type {
  DataPayload,
  DocumentId,
  FlowDocument,
  Payload,
  ResyncPayload,
  SnapshotPayload,
} from "./generated/events.js";
import { type Table, documentKey } from "./documents.js";
import type { FlowEventsError } from "./errors.js";
import { applyPatch } from "./json-patch.js";
import { type LogOptions, type LogTables, appendChunk, chunkByKey, putChunk, removeChunk, seedLogText } from "./logs.js";

export { documentKey } from "./documents.js";

/**
 * `idle` (not connecting: `connect: false` before `start()`, or no `EventSource`, as in server-side
 * rendering), `connecting`, `live`, `error` (retrying; see `error`), `closed` (after `close()`, or
 * after a terminal error, which `error` holds).
 */
export type FlowStatus = "idle" | "connecting" | "live" | "error" | "closed";

export interface FlowState extends LogTables {
  readonly flowId: string;
  readonly status: FlowStatus;
  /** Why `status` is `error` or `closed`; null otherwise. */
  readonly error: FlowEventsError | null;
  /** The id of the last event received: where a new connection resumes. */
  readonly lastEventId: string | null;
  /**
   * True once the data is complete: the first SNAPSHOT was applied, or, when no SNAPSHOT is expected
   * (`lastEventId` or `snapshot: false` given), the stream opened. A `live` status alone is not loaded.
   */
  readonly loaded: boolean;
  /**
   * True after a non-resumable RESYNC, until the SNAPSHOT that replaces the data: what is shown is
   * the last known data, possibly behind. (With `snapshot: false` the data is cleared at once instead.)
   */
  readonly resyncing: boolean;
  /** The flow's documents by collection, then by `documentKey(_id)`, local edits applied. Log chunks are in `logs`. */
  readonly collections: Table<Table<FlowDocument>>;
  /** The event type of each collection seen. */
  readonly eventTypes: Table<string>;
  /** Collections whose SNAPSHOT was cut at the route's limit: the flow has more documents than shown. */
  readonly truncated: Table<boolean>;
  /** Documents whose latest version is not known (too large to send, or no patch and no document): by collection. */
  readonly stale: Table<readonly string[]>;
  /** Log chunks the server dropped for this client while it was too slow (`operation: "skipped"`). */
  readonly skippedLogChunks: number;
  /** Local edits (`applyLocal`) whose echo has not come back yet. */
  readonly pendingWrites: number;
}

export interface ReduceOptions extends LogOptions {
  /** Event types whose documents are log chunks, kept in `logs` (default `["LOG_STREAM"]`). */
  readonly logEventTypes: readonly string[];
  /** False when no SNAPSHOT follows a non-resumable RESYNC: it then clears the data at once (default true). */
  readonly snapshots?: boolean;
}

export const DEFAULT_LOG_EVENT_TYPES: readonly string[] = ["LOG_STREAM"];

export function initialState(flowId: string): FlowState {
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
export function documentsOf(state: FlowState, collection: string): FlowDocument[] {
  return Object.values(state.collections[collection] ?? {});
}

/**
 * Returns the state after `payload`. A SNAPSHOT replaces the collections it lists (all the data
 * after a non-resumable RESYNC); a non-resumable RESYNC marks the data `resyncing`, or clears it
 * when no SNAPSHOT follows (`snapshots: false`).
 */
export function reduce(state: FlowState, payload: Payload, options: ReduceOptions): FlowState {
  switch (payload.type) {
    case "SNAPSHOT":
      return loadSnapshot(state.resyncing ? clearData(state) : state, payload as SnapshotPayload, options);
    case "RESYNC":
      if ((payload as ResyncPayload).resumable) return state;
      return options.snapshots === false ? clearData(state) : { ...state, resyncing: true };
    default:
      return applyChange(state, payload as DataPayload, options);
  }
}

/** Empty data (after a non-resumable RESYNC): keeps the connection fields and the count of local edits. */
export function clearData(state: FlowState): FlowState {
  const { flowId, status, error, lastEventId, pendingWrites } = state;
  return { ...initialState(flowId), status, error, lastEventId, pendingWrites };
}

function loadSnapshot(state: FlowState, snapshot: SnapshotPayload, options: LogOptions): FlowState {
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
  // Older servers send no `logs`.
  const logs = snapshot.logs ?? {};
  for (const [name, entry] of Object.entries(logs)) if (entry != null) eventTypes[name] = entry.eventType;
  return seedLogText({ ...state, loaded: true, resyncing: false, collections, eventTypes, truncated, stale }, logs, options);
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
    state = isLog ? removeChunk(state, key) : setDocument(state, payload.collection, key, null);
    return withStale(state, payload.collection, key, false);
  }
  let next: FlowDocument | null = payload.document;
  const isStale = state.stale[payload.collection]?.includes(key) ?? false;
  if (payload.operation === "update" && payload.patch !== null && !isStale) {
    const current = isLog ? chunkByKey(state, key) : state.collections[payload.collection]?.[key];
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
  else if (payload.operation === "insert") state = appendChunk(state, next, options); // the common case: no search
  else state = putChunk(state, key, next, options);
  return withStale(state, payload.collection, key, false);
}

/** Sets (or, with null, removes) one document of `collection`. */
export function setDocument(state: FlowState, collection: string, key: string, document: FlowDocument | null): FlowState {
  const held = state.collections[collection];
  if (document === null ? !(held !== undefined && key in held) : held?.[key] === document) return state;
  const documents = { ...(held ?? {}) };
  if (document === null) delete documents[key];
  else documents[key] = document;
  return { ...state, collections: { ...state.collections, [collection]: documents } };
}
