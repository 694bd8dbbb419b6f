/* Generated from changesync/schema/events.json by `npm run generate` (json-schema-to-typescript).
 * Do not edit: change changesync/payloads.py, run `python -m changesync.schema`, then `npm run generate`.
 */

/**
 * The data of one changesync Server-Sent Event. Generated from changesync/payloads.py by `python -m changesync.schema`; do not edit.
 */
export type Payload = DataPayload | SnapshotPayload | ResyncPayload;
/**
 * What a route's event (`SYNC_CANVAS`, `EXECUTION_UPDATE`, `LOG_STREAM`…) carries.
 */
export type DataPayload = ChangePayload | PatchOnlyPayload | CoalescedPayload | SkippedPayload | TooLargePayload;
/**
 * A document's `_id`, mapped like any other value (an ObjectId becomes a 24-character hex string).
 */
export type DocumentId = string | number | boolean | FlowDocument;

/**
 * A published change of one document.
 */
export interface ChangePayload {
  /**
   * The route's event type: `SYNC_CANVAS`, `EXECUTION_UPDATE` or `LOG_STREAM` with the default routes.
   */
  type: string;
  /**
   * The flow the change belongs to.
   */
  flowId: string;
  /**
   * The MongoDB collection.
   */
  collection: string;
  /**
   * The oplog time of the write.
   */
  clusterTime: ClusterTime | null;
  /**
   * ISO-8601 UTC time of the write.
   */
  wallTime: string | null;
  /**
   * The mutation id the writer stamped on this write (`[filters] origin_field`, `meta.mutationId` by default), taken out of the document; absent when the write carried none. A client drops the echoes of its own edits by it.
   */
  origin?: string;
  operation: "delete" | "insert" | "replace" | "update";
  documentId: DocumentId;
  /**
   * The filtered document after the change; null for deletes, and for updates whose post-image is unknown. Never null otherwise: a non-null `document` is always the whole document.
   */
  document: FlowDocument | null;
  /**
   * For updates: turns the previously published document into `document`; null otherwise, or when the update cannot be expressed as a patch (then use `document`, or refetch when that is null too).
   */
  patch: PatchOperation[] | null;
}
/**
 * The oplog time of a write; all writes of one transaction share it.
 */
export interface ClusterTime {
  /**
   * Seconds since the epoch.
   */
  t: number;
  /**
   * Increment within the second.
   */
  i: number;
}
/**
 * A filtered MongoDB document, with BSON values mapped to JSON (see the README's BSON → JSON table).
 */
export interface FlowDocument {
  [k: string]: unknown | undefined;
}
/**
 * One RFC 6902 JSON Patch operation. changesync emits `add`, `remove` and `replace`.
 */
export interface PatchOperation {
  op: "add" | "copy" | "move" | "remove" | "replace" | "test";
  path: string;
  value?: unknown;
  from?: string;
}
/**
 * An update on a connection with `?updates=patch`: the patch alone, to apply to the previously published document. Updates without a patch arrive as a `ChangePayload` with the whole document (`patch` null), as on every connection.
 */
export interface PatchOnlyPayload {
  /**
   * The route's event type: `SYNC_CANVAS`, `EXECUTION_UPDATE` or `LOG_STREAM` with the default routes.
   */
  type: string;
  /**
   * The flow the change belongs to.
   */
  flowId: string;
  /**
   * The MongoDB collection.
   */
  collection: string;
  /**
   * The oplog time of the write.
   */
  clusterTime: ClusterTime | null;
  /**
   * ISO-8601 UTC time of the write.
   */
  wallTime: string | null;
  /**
   * The mutation id the writer stamped on this write (`[filters] origin_field`, `meta.mutationId` by default), taken out of the document; absent when the write carried none. A client drops the echoes of its own edits by it.
   */
  origin?: string;
  operation: "update";
  documentId: DocumentId;
  document: null;
  /**
   * Turns the previously published document (from the `SNAPSHOT` and the events since) into the new one.
   */
  patch: PatchOperation[];
  /**
   * Marks the patch-only variant: `document` was left out on purpose, not because it is unknown.
   */
  patchOnly: true;
}
/**
 * Several changes of one document, merged while a slow client's queue was shed: its latest state.
 */
export interface CoalescedPayload {
  /**
   * The route's event type: `SYNC_CANVAS`, `EXECUTION_UPDATE` or `LOG_STREAM` with the default routes.
   */
  type: string;
  /**
   * The flow the change belongs to.
   */
  flowId: string;
  /**
   * The MongoDB collection.
   */
  collection: string;
  /**
   * The oplog time of the write.
   */
  clusterTime: ClusterTime | null;
  /**
   * ISO-8601 UTC time of the write.
   */
  wallTime: string | null;
  /**
   * The mutation id the writer stamped on this write (`[filters] origin_field`, `meta.mutationId` by default), taken out of the document; absent when the write carried none. A client drops the echoes of its own edits by it.
   */
  origin?: string;
  /**
   * `replace` with the latest document, or `delete` when the last change deleted it.
   */
  operation: "delete" | "replace";
  documentId: DocumentId;
  /**
   * The latest filtered document; null after a delete.
   */
  document: FlowDocument | null;
  patch: null;
  /**
   * How many changes this event stands for.
   */
  coalesced: number;
}
/**
 * Stands for log chunks dropped while a slow client's queue was shed (routes with `overflow = "collapse"`).
 */
export interface SkippedPayload {
  /**
   * The route's event type: `SYNC_CANVAS`, `EXECUTION_UPDATE` or `LOG_STREAM` with the default routes.
   */
  type: string;
  /**
   * The flow the change belongs to.
   */
  flowId: string;
  /**
   * The MongoDB collection.
   */
  collection: string;
  /**
   * The oplog time of the write.
   */
  clusterTime: ClusterTime | null;
  /**
   * ISO-8601 UTC time of the write.
   */
  wallTime: string | null;
  /**
   * The mutation id the writer stamped on this write (`[filters] origin_field`, `meta.mutationId` by default), taken out of the document; absent when the write carried none. A client drops the echoes of its own edits by it.
   */
  origin?: string;
  operation: "skipped";
  documentId: null;
  document: null;
  patch: null;
  /**
   * How many events were dropped.
   */
  skipped: number;
}
/**
 * A change too large to send (`limits.max_event_bytes`): refetch the document `documentId`.
 */
export interface TooLargePayload {
  /**
   * The route's event type: `SYNC_CANVAS`, `EXECUTION_UPDATE` or `LOG_STREAM` with the default routes.
   */
  type: string;
  /**
   * The flow the change belongs to.
   */
  flowId: string;
  /**
   * The MongoDB collection.
   */
  collection: string;
  /**
   * The oplog time of the write.
   */
  clusterTime: ClusterTime | null;
  /**
   * ISO-8601 UTC time of the write.
   */
  wallTime: string | null;
  /**
   * The mutation id the writer stamped on this write (`[filters] origin_field`, `meta.mutationId` by default), taken out of the document; absent when the write carried none. A client drops the echoes of its own edits by it.
   */
  origin?: string;
  operation: "delete" | "insert" | "replace" | "update";
  documentId: DocumentId;
  document: null;
  patch: null;
  tooLarge: true;
  /**
   * The size in bytes the event would have had.
   */
  size: number;
}
/**
 * The flow's current filtered state, consistent with the events that follow it; replaces the client's copy.
 */
export interface SnapshotPayload {
  type: "SNAPSHOT";
  flowId: string;
  /**
   * By collection name; collections whose route has `snapshot = "none"` or `"log"` are absent.
   */
  collections: {
    [k: string]: SnapshotCollection | undefined;
  };
  /**
   * By collection name: the collections whose route has `snapshot = "log"` (`flow_logs` by default).
   */
  logs: {
    [k: string]: SnapshotLog | undefined;
  };
}
/**
 * What a snapshot holds of one collection.
 */
export interface SnapshotCollection {
  /**
   * The event type of the collection's route: later changes of these documents arrive as this event.
   */
  eventType: string;
  /**
   * True when the route's `snapshot_limit` was hit: the flow has more documents than `documents`.
   */
  truncated: boolean;
  /**
   * The flow's filtered documents in this collection.
   */
  documents: FlowDocument[];
}
/**
 * What a snapshot holds of a log collection (route with `snapshot = "log"`): the latest execution's output by node. Its chunks' events do not follow the snapshot; later chunks do, once each.
 */
export interface SnapshotLog {
  /**
   * The event type of the collection's route (`LOG_STREAM`): later chunks arrive as this event.
   */
  eventType: string;
  /**
   * The execution (`log_execution`) of the flow's newest chunk; null when the flow has no chunk.
   */
  executionId: {
    [k: string]: unknown | undefined;
  };
  /**
   * The execution's nodes that have output, in the order of their first chunk.
   */
  nodes: SnapshotNodeLog[];
}
/**
 * One node's log output so far, in the latest execution.
 */
export interface SnapshotNodeLog {
  /**
   * The chunks' node id (`log_node`), mapped like any other value.
   */
  nodeId: {
    [k: string]: unknown | undefined;
  };
  /**
   * The text of the node's chunks (`log_text`) joined, oldest first: the tail when `truncated`.
   */
  text: string;
  /**
   * How many chunks `text` joins.
   */
  chunks: number;
  /**
   * True when older chunks were left out (`log_tail_bytes`, `snapshot_limit`): `text` is the tail.
   */
  truncated: boolean;
}
/**
 * The client's copy may have a gap.
 */
export interface ResyncPayload {
  type: "RESYNC";
  flowId: string;
  /**
   * Why (docs/protocol.md lists every reason): `slow-consumer`, `token-expired`, `interrupted` resume; `invalid-id`, `unknown-position`, `history-lost`, `catch-up-failed`, `catch-up-timeout`, `access-revoked`, `event-skipped`, `collection-drop`, `collection-rename`, `database-dropped` and `invalidated` are not.
   */
  reason: string;
  /**
   * True: keep your state, the stream ends and reconnecting with the last event id catches up. False: discard your state; a `SNAPSHOT` follows when snapshots are on, otherwise reload the flow.
   */
  resumable: boolean;
}
