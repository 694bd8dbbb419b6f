/**
 * `FlowEvents`: one flow's changesync event stream, reconnected transparently, with the flow's state.
 */
import type {
  ChangePayload,
  DataPayload,
  DocumentId,
  FlowDocument,
  Payload,
  ResyncPayload,
  SnapshotPayload,
} from "./generated/events.js";
import { type CanvasChange, type CanvasLayout, DEFAULT_CANVAS_LAYOUT, canvasChange } from "./canvas.js";
import {
  DEFAULT_LOG_EVENT_TYPES,
  FlowEventsError,
  type FlowState,
  type FlowStatus,
  documentKey,
  initialState,
  reduce,
} from "./state.js";

/** The event types of changesync's default routes. */
export const DEFAULT_EVENT_TYPES = ["SYNC_CANVAS", "EXECUTION_UPDATE", "LOG_STREAM"] as const;
export type DefaultEventType = (typeof DEFAULT_EVENT_TYPES)[number];

/** The part of the browser's `EventSource` that `FlowEvents` uses (tests pass a fake). */
export interface EventSourceLike {
  readonly readyState: number;
  addEventListener(type: string, listener: (event: MessageEvent<string>) => void): void;
  close(): void;
}
export type EventSourceConstructor = new (url: string, init?: { withCredentials?: boolean }) => EventSourceLike;

const CONNECTING = 0;
const CLOSED = 2;

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
  /** Only these event types (the server's `?types=`); default: all. SNAPSHOT and RESYNC always come. */
  readonly types?: readonly string[];
  /**
   * Token mode: called at every connection and reconnection; the token is sent as `?access_token=`
   * (an `EventSource` cannot set headers). Without it, cookie mode: the browser sends the
   * `changesync_token` cookie (set `withCredentials` when the service is on another origin).
   */
  readonly getToken?: () => string | Promise<string>;
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
  /** Event types whose documents are log chunks, appended to `state.logs` (default `["LOG_STREAM"]`). */
  readonly logEventTypes?: readonly string[];
  /** First delay before a reconnection, doubled after each failed attempt (default 1000 ms). */
  readonly reconnectDelayMs?: number;
  /** Upper bound of that delay (default 30000 ms). */
  readonly maxReconnectDelayMs?: number;
  /** The `EventSource` implementation (default: the global one). */
  readonly EventSource?: EventSourceConstructor;
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

type Listener<T> = (value: T) => void;

interface Waiter {
  queue: Payload[];
  wake: (() => void) | null;
}

function report(error: unknown): void {
  if (typeof globalThis.reportError === "function") globalThis.reportError(error);
  else setTimeout(() => { throw error; }, 0);
}

/**
 * Subscribes to one flow. Connects at once; call `close()` when done.
 *
 * ```ts
 * const flow = new FlowEvents({ baseUrl, flowId, getToken: () => api.changesyncToken() });
 * flow.on("state", (state) => render(state));
 * for await (const payload of flow) console.log(payload.type);
 * ```
 */
export class FlowEvents implements AsyncIterable<Payload> {
  private current: FlowState;
  private source: EventSourceLike | null = null;
  private connection = 0;
  private failures = 0;
  private opened = false;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private closed = false;
  private readonly listeners = new Map<string, Set<Listener<never>>>();
  private readonly waiters = new Set<Waiter>();
  /** Bumped at every reset of the data (SNAPSHOT, non-resumable RESYNC): older refetches are dropped. */
  private epoch = 0;
  /** Documents with a refetch in flight, and that refetch's number: only the latest one may apply. */
  private readonly refetching = new Map<string, number>();
  private readonly eventTypes: string[];
  private readonly logEventTypes: readonly string[];
  private readonly EventSourceImpl: EventSourceConstructor;

  constructor(readonly options: FlowEventsOptions) {
    const implementation = options.EventSource ?? (globalThis as { EventSource?: EventSourceConstructor }).EventSource;
    if (implementation === undefined) throw new TypeError("no EventSource here: pass options.EventSource");
    this.EventSourceImpl = implementation;
    this.current = { ...initialState(options.flowId), lastEventId: options.lastEventId ?? null };
    this.eventTypes = [...new Set<string>([...(options.types ?? DEFAULT_EVENT_TYPES), "SNAPSHOT", "RESYNC"])];
    this.logEventTypes = options.logEventTypes ?? DEFAULT_LOG_EVENT_TYPES;
    void this.connect();
  }

  /** The flow's current state (a new object after every change). */
  get state(): FlowState {
    return this.current;
  }

  get status(): FlowStatus {
    return this.current.status;
  }

  /** Calls `listener` for each event of `type` (or each state, status or error); returns the unsubscribe function. */
  on<K extends keyof FlowEventMap>(type: K, listener: Listener<FlowEventMap[K]>): () => void;
  on(type: string, listener: Listener<DataPayload>): () => void;
  on(type: string, listener: Listener<never>): () => void {
    let set = this.listeners.get(type);
    if (set === undefined) this.listeners.set(type, (set = new Set()));
    set.add(listener);
    return () => void set.delete(listener);
  }

  /** Every payload from now on, in order, until `close()`. Each iterator buffers what it has not consumed. */
  [Symbol.asyncIterator](): AsyncIterator<Payload> {
    const waiter: Waiter = { queue: [], wake: null };
    this.waiters.add(waiter);
    const done = (): IteratorReturnResult<undefined> => ({ done: true, value: undefined });
    return {
      next: async (): Promise<IteratorResult<Payload>> => {
        while (waiter.queue.length === 0) {
          if (this.closed || !this.waiters.has(waiter)) return done();
          await new Promise<void>((resolve) => (waiter.wake = resolve));
          waiter.wake = null;
        }
        return { done: false, value: waiter.queue.shift() as Payload };
      },
      return: async (): Promise<IteratorResult<Payload>> => {
        this.waiters.delete(waiter);
        waiter.wake?.();
        return done();
      },
    };
  }

  /** Stops for good: closes the stream, cancels reconnection, ends the iterators. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.connection++;
    if (this.timer !== null) clearTimeout(this.timer);
    this.source?.close();
    this.source = null;
    for (const waiter of this.waiters) waiter.wake?.();
  }

  /** Drops the connection and opens a new one now, from the last event id (e.g. after the user signed in again). */
  reconnect(): void {
    if (this.closed) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.current.status === "live") this.update({ ...this.current, status: "connecting" });
    void this.connect();
  }

  // --- the connection ---------------------------------------------------------------------------

  private url(token: string | undefined): string {
    const { baseUrl, flowId, types, snapshot, updates } = this.options;
    const query = new URLSearchParams();
    if (types !== undefined) query.set("types", types.join(","));
    if (snapshot !== undefined) query.set("snapshot", String(snapshot));
    if ((updates ?? "patch") === "patch") query.set("updates", "patch");
    if (this.current.lastEventId) query.set("lastEventId", this.current.lastEventId);
    if (token !== undefined) query.set("access_token", token);
    const text = query.toString();
    return `${baseUrl.replace(/\/+$/, "")}/flows/${encodeURIComponent(flowId)}/events${text ? `?${text}` : ""}`;
  }

  private async connect(): Promise<void> {
    const connection = ++this.connection;
    this.source?.close();
    this.source = null;
    this.opened = false;
    let token: string | undefined;
    if (this.options.getToken !== undefined) {
      try {
        token = await this.options.getToken();
      } catch (cause) {
        if (connection !== this.connection) return;
        this.fail(new FlowEventsError("could not get a token", "token", { cause }));
        return;
      }
      if (connection !== this.connection) return;
    }
    const source = new this.EventSourceImpl(this.url(token), { withCredentials: this.options.withCredentials ?? false });
    this.source = source;
    source.addEventListener("open", () => {
      if (connection !== this.connection) return;
      this.opened = true;
      this.failures = 0;
      this.update({ ...this.current, status: "live", error: null });
    });
    source.addEventListener("error", () => {
      if (connection === this.connection) this.onError(source);
    });
    for (const type of this.eventTypes) {
      source.addEventListener(type, (event) => {
        if (connection === this.connection) this.onMessage(type, event);
      });
    }
  }

  private onError(source: EventSourceLike): void {
    const wasOpen = this.opened;
    this.opened = false;
    // Cookie mode: while the browser reconnects by itself (with Last-Event-ID), let it.
    if (this.options.getToken === undefined && source.readyState === CONNECTING) {
      if (wasOpen) this.update({ ...this.current, status: "connecting" });
      else this.fail(new FlowEventsError("could not connect; retrying", "connect"), false);
      return;
    }
    // Token mode (the URL's token may have expired), or the browser gave up (readyState CLOSED):
    // a new EventSource, with a fresh token and ?lastEventId=.
    source.close();
    if (this.source === source) this.source = null;
    if (wasOpen) {
      this.update({ ...this.current, status: "connecting" });
      this.schedule();
    } else {
      this.fail(new FlowEventsError("could not connect; retrying", "connect"));
    }
  }

  /** Reports `error`, sets status `error`, and (unless the browser retries by itself) schedules a retry. */
  private fail(error: FlowEventsError, retry = true): void {
    this.failures++;
    this.update({ ...this.current, status: "error", error });
    this.emit("error", error);
    if (retry) this.schedule();
  }

  private schedule(): void {
    if (this.closed) return;
    if (this.timer !== null) clearTimeout(this.timer);
    const base = this.options.reconnectDelayMs ?? 1000;
    const max = this.options.maxReconnectDelayMs ?? 30_000;
    const delay = Math.min(max, base * 2 ** Math.max(0, this.failures - 1));
    // Jitter (50–100 %): clients of a restarted server do not all come back at once.
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.connect();
    }, delay * (0.5 + Math.random() / 2));
  }

  // --- events -----------------------------------------------------------------------------------

  private onMessage(type: string, event: MessageEvent<string>): void {
    let payload: Payload;
    try {
      payload = JSON.parse(event.data) as Payload;
    } catch (cause) {
      this.emit("error", new FlowEventsError(`a ${type} event is not JSON`, "parse", { cause }));
      return;
    }
    const lastEventId = event.lastEventId || this.current.lastEventId;
    const previous = this.current;
    let next = reduce({ ...this.current, lastEventId }, payload, { logEventTypes: this.logEventTypes });
    if (payload.type === "SNAPSHOT" || (payload.type === "RESYNC" && !(payload as ResyncPayload).resumable)) {
      this.epoch++;
      this.refetching.clear();
    } else if (payload.type !== "RESYNC") {
      next = this.track(payload as DataPayload, next);
    }
    this.update(next, false);
    this.emit(type, payload);
    if (payload.type === "SYNC_CANVAS") this.emitCanvas(payload as DataPayload, previous, next);
    for (const waiter of this.waiters) {
      waiter.queue.push(payload);
      waiter.wake?.();
    }
    this.emit("state", this.current);
  }

  /** Starts a refetch when the event left its document without a known version; supersedes older ones. */
  private track(payload: DataPayload, state: FlowState): FlowState {
    if (payload.operation === "skipped") return state;
    const key = documentKey(payload.documentId);
    const id = `${payload.collection}\u0000${key}`;
    const previous = this.refetching.get(id);
    // An in-flight refetch may return an older version than this event's: it must not apply.
    this.refetching.delete(id);
    const missing = payload.operation !== "delete" && (state.stale[payload.collection]?.includes(key) ?? false);
    if (missing && this.options.refetch !== undefined) {
      const number = (previous ?? 0) + 1;
      this.refetching.set(id, number);
      void this.refetch(payload, id, number);
    }
    return state;
  }

  private async refetch(payload: DataPayload, id: string, number: number): Promise<void> {
    const epoch = this.epoch;
    const refetch = this.options.refetch as NonNullable<FlowEventsOptions["refetch"]>;
    let document: FlowDocument | null;
    try {
      document = await refetch({
        flowId: this.options.flowId,
        collection: payload.collection,
        documentId: payload.documentId as DocumentId,
        type: payload.type,
        payload,
      });
    } catch (cause) {
      if (this.refetching.get(id) === number) this.refetching.delete(id);
      this.emit("error", new FlowEventsError(`could not refetch a ${payload.collection} document`, "refetch", { cause }));
      return;
    }
    // A later event (or a reset) already decided this document's state: the fetched copy may be older.
    if (this.closed || epoch !== this.epoch || this.refetching.get(id) !== number) return;
    this.refetching.delete(id);
    const { type, flowId, collection, clusterTime, wallTime } = payload;
    const replacement: ChangePayload = {
      type,
      flowId,
      collection,
      clusterTime,
      wallTime,
      operation: document === null ? "delete" : "replace",
      documentId: payload.documentId as DocumentId,
      document,
      patch: null,
    };
    const before = this.current;
    this.update(reduce(this.current, replacement, { logEventTypes: this.logEventTypes }));
    if (type === "SYNC_CANVAS") this.emitCanvas(replacement, before, this.current);
  }

  /** The `canvas` event: what `payload` did to the nodes and edges, from the document before and after it. */
  private emitCanvas(payload: DataPayload, before: FlowState, after: FlowState): void {
    if (payload.operation === "skipped" || !this.listeners.get("canvas")?.size) return;
    const key = documentKey(payload.documentId);
    const { collection } = payload;
    const change = canvasChange(
      collection,
      payload.documentId,
      payload.operation,
      before.collections[collection]?.[key],
      after.collections[collection]?.[key],
      this.options.canvasLayout ?? DEFAULT_CANVAS_LAYOUT,
      after.stale[collection]?.includes(key) ?? false,
    );
    this.emit("canvas", change);
  }

  private update(state: FlowState, notify = true): void {
    const statusChanged = state.status !== this.current.status;
    this.current = state;
    if (statusChanged) this.emit("status", state.status);
    if (notify) this.emit("state", state);
  }

  private emit(type: string, value: unknown): void {
    const set = this.listeners.get(type);
    if (set === undefined) return;
    for (const listener of [...set]) {
      try {
        (listener as Listener<unknown>)(value);
      } catch (error) {
        report(error);
      }
    }
  }
}
