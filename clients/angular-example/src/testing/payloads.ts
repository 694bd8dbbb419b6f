/** Event payloads shaped like changesync's (changesync/payloads.py), for the fake stream. */
import type { ChangePayload, FlowDocument, ResyncPayload, SnapshotPayload } from "@changesync/client";

export const FLOW_ID = "flow-a";
export const EXECUTION_ID = "665f1c2e9b1e8a0012345678";

export function change(
  type: string,
  collection: string,
  operation: ChangePayload["operation"],
  document: FlowDocument,
  flowId = FLOW_ID,
): ChangePayload {
  return {
    type,
    flowId,
    collection,
    clusterTime: { t: 1_796_000_000, i: 1 },
    wallTime: "2026-12-01T10:00:00.000Z",
    operation,
    documentId: document["_id"] as ChangePayload["documentId"],
    document: operation === "delete" ? null : document,
    patch: null,
  };
}

interface CollectionContent {
  readonly eventType: string;
  readonly documents: readonly FlowDocument[];
}

interface NodeOutput {
  readonly nodeId: string;
  readonly text: string;
}

/** A SNAPSHOT of `collections`, with `logs` as the latest execution's output by node. */
export function snapshot(
  collections: Readonly<Record<string, CollectionContent>>,
  logs: readonly NodeOutput[] = [],
  flowId = FLOW_ID,
): SnapshotPayload {
  const payload = {
    type: "SNAPSHOT",
    flowId,
    collections: Object.fromEntries(
      Object.entries(collections).map(([name, { eventType, documents }]) => [
        name,
        { eventType, truncated: false, documents: [...documents] },
      ]),
    ),
    logs: {
      flow_logs: {
        eventType: "LOG_STREAM",
        executionId: logs.length ? EXECUTION_ID : null,
        nodes: logs.map(({ nodeId, text }) => ({ nodeId, text, chunks: 1, truncated: false })),
      },
    },
  };
  return payload as unknown as SnapshotPayload;
}

export function resync(resumable: boolean, reason = resumable ? "token-expired" : "history-lost"): ResyncPayload {
  return { type: "RESYNC", flowId: FLOW_ID, reason, resumable };
}

export function board(nodeIds: readonly string[], flowId = FLOW_ID): FlowDocument {
  return {
    _id: flowId,
    name: `Board ${flowId}`,
    nodes: nodeIds.map((id, index) => ({ id, type: "llm", position: { x: 100 * index, y: 40 }, data: { label: `Step ${id}` } })),
    edges: nodeIds.slice(1).map((id, index) => ({ id: `e-${nodeIds[index]}-${id}`, source: nodeIds[index], target: id })),
  };
}

export function canvasSnapshot(nodeIds: readonly string[], flowId = FLOW_ID): SnapshotPayload {
  return snapshot({ flowboards: { eventType: "SYNC_CANVAS", documents: [board(nodeIds, flowId)] } }, [], flowId);
}

export function execution(status: string, nodes: Readonly<Record<string, string>> = {}): FlowDocument {
  return {
    _id: EXECUTION_ID,
    flowId: FLOW_ID,
    status,
    nodes: Object.fromEntries(Object.entries(nodes).map(([id, nodeStatus]) => [id, { status: nodeStatus }])),
  };
}

let chunkNumber = 0;

export function logChunk(nodeId: string, chunk: string): ChangePayload {
  chunkNumber++;
  return change("LOG_STREAM", "flow_logs", "insert", {
    _id: `chunk-${chunkNumber}`,
    flowId: FLOW_ID,
    executionId: EXECUTION_ID,
    nodeId,
    seq: chunkNumber,
    chunk,
  });
}
