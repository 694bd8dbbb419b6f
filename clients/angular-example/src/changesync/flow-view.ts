/**
 * What a flow editor shows, read from the client's `FlowState` by pure functions. Each view has an
 * `inputs` function (the parts of the state it reads) and a `build` function: a view is rebuilt only
 * when one of its inputs is a new object, so untouched views keep their identity.
 */
import { type CanvasLayout, DEFAULT_CANVAS_LAYOUT, type FlowDocument, type FlowState } from "@changesync/client";

/** The collection of board documents, keyed by flow id. */
export const BOARD_COLLECTION = "flowboards";
/** The collection of execution documents; the newest run has the highest ObjectId. */
export const EXECUTION_COLLECTION = "flow_executions";

/** executionId → nodeId → `{ text, truncated }`: each node's accumulated log output. */
export type FlowLogText = FlowState["logText"];

/** The flow-editor canvas: its board document, and its nodes and edges wherever they live. */
export interface Canvas {
  readonly board: FlowDocument | null;
  /** The board's `nodes` array items, then the documents of the node collections. */
  readonly nodes: readonly FlowDocument[];
  readonly edges: readonly FlowDocument[];
}

export const EMPTY_CANVAS: Canvas = { board: null, nodes: [], edges: [] };

type Table = FlowState["collections"][string] | undefined;

function boardOf(state: FlowState): FlowDocument | null {
  const boards = state.collections[BOARD_COLLECTION];
  if (boards === undefined) return null;
  return boards[state.flowId] ?? Object.values(boards)[0] ?? null;
}

/** The parts of the state the canvas is made of. */
export function canvasInputs(state: FlowState | null, layout: CanvasLayout = DEFAULT_CANVAS_LAYOUT): readonly unknown[] {
  if (state === null) return [];
  const tables: Table[] = [...layout.nodeCollections, ...layout.edgeCollections].map((name) => state.collections[name]);
  return [boardOf(state), ...tables];
}

function items(value: unknown): FlowDocument[] {
  if (!Array.isArray(value)) return [];
  return value.filter((item): item is FlowDocument => typeof item === "object" && item !== null && !Array.isArray(item));
}

export function canvasOf(state: FlowState | null, layout: CanvasLayout = DEFAULT_CANVAS_LAYOUT): Canvas {
  if (state === null) return EMPTY_CANVAS;
  const board = boardOf(state);
  const documents = (names: readonly string[]) => names.flatMap((name) => Object.values(state.collections[name] ?? {}));
  return {
    board,
    nodes: [...items(board?.[layout.nodesField]), ...documents(layout.nodeCollections)],
    edges: [...items(board?.[layout.edgesField]), ...documents(layout.edgeCollections)],
  };
}

export function executionInputs(state: FlowState | null): readonly unknown[] {
  return [state?.collections[EXECUTION_COLLECTION]];
}

/** The latest run: the execution document with the highest key (ObjectIds grow with time), or null. */
export function latestExecution(state: FlowState | null): FlowDocument | null {
  const runs = Object.entries(state?.collections[EXECUTION_COLLECTION] ?? {});
  let latest: [string, FlowDocument] | undefined;
  for (const run of runs) if (latest === undefined || run[0] > latest[0]) latest = run;
  return latest?.[1] ?? null;
}

export function logTextOf(state: FlowState | null): FlowLogText {
  return state?.logText ?? {};
}

/** The tables of the collections whose event type is `eventType` (a route's `event_type`). */
export function documentsInputs(state: FlowState | null, eventType: string): readonly unknown[] {
  if (state === null) return [];
  return Object.entries(state.eventTypes)
    .filter(([, type]) => type === eventType)
    .map(([collection]) => state.collections[collection]);
}

/** The documents of the tables `documentsInputs` returned. */
export function documentsIn<T>(tables: readonly unknown[]): T[] {
  return tables.flatMap((table) => Object.values((table as Table) ?? {})) as T[];
}

export function documentsOfType<T>(state: FlowState | null, eventType: string): T[] {
  return documentsIn<T>(documentsInputs(state, eventType));
}

/** Two input lists are the same when they hold the same objects, in order. */
export function sameInputs(a: readonly unknown[], b: readonly unknown[]): boolean {
  return a.length === b.length && a.every((value, i) => value === b[i]);
}
