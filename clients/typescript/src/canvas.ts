/**
 * What a SYNC_CANVAS event changed: the nodes and edges, by their `id`, that were added, changed or
 * removed.
 *
 * The two versions of the document are compared item by item, matched by `id` (never by position),
 * so reordering an array reports nothing. A patch applied by `applyPatch` shares every untouched item
 * with the previous version, so for a patch the comparison stops at the first reference check of
 * each item: the cost follows the patch, not the size of the board.
 */
import type { DocumentId, FlowDocument } from "./generated/events.js";
import { jsonEqual } from "./json-patch.js";
import { documentKey } from "./documents.js";

/** Ids of the items of one kind (nodes or edges) that an event added, changed or removed. */
export interface ItemChanges {
  readonly added: readonly string[];
  readonly changed: readonly string[];
  readonly removed: readonly string[];
}

/** What one SYNC_CANVAS event did to the canvas. */
export interface CanvasChange {
  readonly collection: string;
  readonly documentId: DocumentId | null;
  readonly operation: string;
  readonly nodes: ItemChanges;
  readonly edges: ItemChanges;
  /**
   * True when the event left the document's new version unknown (a patch that did not apply, a
   * document too large to send): nothing is reported until it is refetched or a full version arrives.
   */
  readonly stale: boolean;
}

/** Where nodes and edges live: arrays of a board document, or one document each in a collection. */
export interface CanvasLayout {
  /** Collections whose documents are nodes (default `["flow_nodes"]`). */
  readonly nodeCollections: readonly string[];
  /** Collections whose documents are edges (default `["flow_edges"]`). */
  readonly edgeCollections: readonly string[];
  /** The board document's fields that hold the node and edge arrays (default `nodes`, `edges`). */
  readonly nodesField: string;
  readonly edgesField: string;
}

export const DEFAULT_CANVAS_LAYOUT: CanvasLayout = {
  nodeCollections: ["flow_nodes"],
  edgeCollections: ["flow_edges"],
  nodesField: "nodes",
  edgesField: "edges",
};

const NONE: ItemChanges = { added: [], changed: [], removed: [] };

/** An item's id: its `id` field, as a string; items without one are not tracked. */
function idOf(item: unknown): string | null {
  if (typeof item !== "object" || item === null || Array.isArray(item)) return null;
  const id = (item as Record<string, unknown>)["id"];
  return typeof id === "string" || typeof id === "number" ? String(id) : null;
}

function byId(items: unknown): Map<string, unknown> {
  const map = new Map<string, unknown>();
  if (!Array.isArray(items)) return map;
  for (const item of items) {
    const id = idOf(item);
    if (id !== null) map.set(id, item);
  }
  return map;
}

/** Compares two arrays of items with `id`s; `undefined`/non-arrays count as empty. */
export function itemChanges(before: unknown, after: unknown): ItemChanges {
  if (before === after) return NONE;
  const previous = byId(before);
  const next = byId(after);
  const added: string[] = [];
  const changed: string[] = [];
  const removed: string[] = [];
  for (const [id, item] of next) {
    if (!previous.has(id)) added.push(id);
    else if (!jsonEqual(previous.get(id), item)) changed.push(id);
  }
  for (const id of previous.keys()) if (!next.has(id)) removed.push(id);
  return added.length || changed.length || removed.length ? { added, changed, removed } : NONE;
}

/** One document that is itself a node or an edge: added, changed or removed as a whole. */
function documentChange(before: FlowDocument | null | undefined, after: FlowDocument | null | undefined): ItemChanges {
  const id = idOf(after) ?? idOf(before) ?? documentKey(((after ?? before)?.["_id"] ?? null) as DocumentId | null);
  if (before == null && after == null) return NONE;
  if (before == null) return { added: [id], changed: [], removed: [] };
  if (after == null) return { added: [], changed: [], removed: [id] };
  return before === after || jsonEqual(before, after) ? NONE : { added: [], changed: [id], removed: [] };
}

/**
 * The canvas change between two versions of one document of `collection` (`null`/`undefined`: it
 * did not exist). Documents of node and edge collections are items themselves; any other document
 * is a board whose node and edge arrays are compared.
 */
export function canvasChange(
  collection: string,
  documentId: DocumentId | null,
  operation: string,
  before: FlowDocument | null | undefined,
  after: FlowDocument | null | undefined,
  layout: CanvasLayout = DEFAULT_CANVAS_LAYOUT,
  stale = false,
): CanvasChange {
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
