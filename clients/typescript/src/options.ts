/**
 * What `FlowEvents` takes (`FlowEventsOptions`) and what it emits (`FlowEventMap`).
 */
import type { DataPayload, DocumentId, FlowDocument, ResyncPayload, SnapshotPayload } from "./generated/events.js";
import type { CanvasChange, CanvasLayout } from "./canvas.js";
import type { EventSourceConstructor } from "./connection.js";
import type { FlowEventsError } from "./errors.js";
import type { FetchLike } from "./retry.js";
import type { FlowState, FlowStatus } from "./state.js";

/** The event types of changesync's default routes. */
export const DEFAULT_EVENT_TYPES = ["SYNC_CANVAS", "EXECUTION_UPDATE", "LOG_STREAM"] as const;
export type DefaultEventType = (typeof DEFAULT_EVENT_TYPES)[number];

/** What `refetch` is asked for: a document whose new version was not sent (too large, or not expressible). */
export interface RefetchRequest {
  readonly flowId: string;
  readonly collection: string;
  readonly documentId: DocumentId;
  /** The event type (`SYNC_CANVAS`…). */
  readonly type: string;
  readonly payload: DataPayload;
}

export interface FlowEventsOptions {
  /** The service's origin and path prefix, e.g. `https://sync.example.com` (`""`: the page's origin). */
  readonly baseUrl: string;
  readonly flowId: string;
  /**
   * Only these event types (the server's `?types=`); default: all. SNAPSHOT and RESYNC always come.
   * Without it, the client listens to the default routes' types and to every type given to `on()`:
   * an `EventSource` has no wildcard for named events, so list your own routes' types here or `on()` them.
   */
  readonly types?: readonly string[];
  /**
   * Token mode: called at every connection and reconnection; the token is sent as `?access_token=`
   * (an `EventSource` cannot set headers). Without it, cookie mode: the browser sends the
   * `changesync_token` cookie (set `withCredentials` when the service is on another origin).
   */
  readonly getToken?: () => string | Promise<string>;
  /** How long `getToken` may take before the attempt counts as a `token` error and is retried (default 10000 ms). */
  readonly tokenTimeoutMs?: number;
  /** Send cookies to a service on another origin (its CORS settings must allow credentials). */
  readonly withCredentials?: boolean;
  /** `false`: no SNAPSHOT on a first connection; default: the server's `stream.snapshot_on_connect`. */
  readonly snapshot?: boolean;
  /**
   * How updates arrive (the server's `?updates=`). `"patch"` (the default): an update with a patch
   * comes without its document (`patchOnly`) and is applied to the copy kept from the SNAPSHOT; a
   * patch that does not apply leaves the document in `state.stale` (and refetches it, with
   * `refetch`). `"full"`: every update also carries the whole document.
   */
  readonly updates?: "patch" | "full";
  /** `false`: do not connect yet; `start()` does (default true). */
  readonly connect?: boolean;
  /** Where the canvas's nodes and edges live, for the `canvas` event (default `DEFAULT_CANVAS_LAYOUT`). */
  readonly canvasLayout?: CanvasLayout;
  /** Resume from a stored position (a previous `state.lastEventId`) instead of starting with a SNAPSHOT. */
  readonly lastEventId?: string;
  /**
   * Fetches a document whose new version the stream could not carry (`tooLarge`, or an update with
   * neither patch nor document). Return the document, or null when it no longer exists. Without it
   * the document is only listed in `state.stale`.
   */
  readonly refetch?: (request: RefetchRequest) => Promise<FlowDocument | null> | FlowDocument | null;
  /** Event types whose documents are log chunks, kept in `state.logs` (default `["LOG_STREAM"]`). */
  readonly logEventTypes?: readonly string[];
  /** How many executions' logs to keep, the newest first seen (default 5). */
  readonly keepExecutions?: number;
  /** The chunk field whose text `state.logText` joins (default `chunk`; other values than strings are skipped). */
  readonly logTextField?: string;
  /** How long a local edit waits for its echo before it is dropped (default 30000 ms). */
  readonly pendingTimeoutMs?: number;
  /**
   * First delay before a reconnection (default 1000 ms), doubled after each failed attempt, with
   * jitter. It starts over once a connection is healthy: after its SNAPSHOT, or after 10 s open.
   */
  readonly reconnectDelayMs?: number;
  /** Upper bound of that delay (default 30000 ms). */
  readonly maxReconnectDelayMs?: number;
  /** The `EventSource` implementation (default: the global one; without one the client stays `idle`). */
  readonly EventSource?: EventSourceConstructor;
  /** Reads the HTTP status of a refused connection (default: the global `fetch`). */
  readonly fetch?: FetchLike;
}

export interface FlowEventMap {
  SNAPSHOT: SnapshotPayload;
  RESYNC: ResyncPayload;
  SYNC_CANVAS: DataPayload;
  EXECUTION_UPDATE: DataPayload;
  LOG_STREAM: DataPayload;
  /** After each SYNC_CANVAS event (and each refetch of a canvas document): the nodes and edges it added, changed or removed. */
  canvas: CanvasChange;
  /** The state after each change (also after status changes). */
  state: FlowState;
  status: FlowStatus;
  error: FlowEventsError;
}
