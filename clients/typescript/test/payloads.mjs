// Payload builders shaped like changesync's (see changesync/payloads.py).
export const FLOW = "flow-1";

const base = (type, collection) => ({
  type,
  flowId: FLOW,
  collection,
  clusterTime: { t: 1795715181, i: 1 },
  wallTime: "2026-11-26T17:46:21.381Z",
});

export const change = (type, collection, operation, documentId, document, patch = null) => ({
  ...base(type, collection),
  operation,
  documentId,
  document,
  patch,
});

export const canvas = (operation, document, patch = null) =>
  change("SYNC_CANVAS", "flowboards", operation, FLOW, operation === "delete" ? null : document, patch);

export const node = (operation, id, document, patch = null) =>
  change("SYNC_CANVAS", "flow_nodes", operation, id, document, patch);

export const log = (id, executionId, nodeId, seq, chunk) =>
  change("LOG_STREAM", "flow_logs", "insert", id, { _id: id, flowId: FLOW, executionId, nodeId, seq, chunk });

export const coalesced = (collection, documentId, document, count) => ({
  ...base("SYNC_CANVAS", collection),
  operation: document === null ? "delete" : "replace",
  documentId,
  document,
  patch: null,
  coalesced: count,
});

export const skipped = (count) => ({
  ...base("LOG_STREAM", "flow_logs"),
  operation: "skipped",
  documentId: null,
  document: null,
  patch: null,
  skipped: count,
});

export const tooLarge = (collection, operation, documentId, size = 2_000_000) => ({
  ...base("SYNC_CANVAS", collection),
  operation,
  documentId,
  document: null,
  patch: null,
  tooLarge: true,
  size,
});

export const snapshot = (collections) => ({ type: "SNAPSHOT", flowId: FLOW, collections });

export const resync = (reason, resumable) => ({ type: "RESYNC", flowId: FLOW, reason, resumable });

export const board = (nodes = []) => ({ _id: FLOW, name: "Flow", nodes, edges: [], viewport: { x: 0, y: 0, zoom: 1 } });

export const canvasSnapshot = (boardDocument, nodes = []) =>
  snapshot({
    flowboards: { eventType: "SYNC_CANVAS", truncated: false, documents: [boardDocument] },
    flow_nodes: { eventType: "SYNC_CANVAS", truncated: false, documents: nodes },
    flow_executions: { eventType: "EXECUTION_UPDATE", truncated: false, documents: [] },
  });

/** An update as a patch-only connection (`?updates=patch`) receives it. */
export const patchOnly = (collection, documentId, patch) => ({
  ...change("SYNC_CANVAS", collection, "update", documentId, null, patch),
  patchOnly: true,
});
