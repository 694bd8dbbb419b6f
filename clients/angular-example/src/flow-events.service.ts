/**
 * FlowEventsService: one flow's live state from changesync, as RxJS observables.
 *
 * The drop-in replacement for a Firebase-based service: the component subscribes to `canvas$`,
 * `execution$` and `logs$` as it did to Firestore's `docData`/`collectionData`, and changesync keeps
 * them current from MongoDB, whoever writes there. Provide it per editor component (one flow each):
 * `providers: [FlowEventsService]`, then `open(flowId)`; it closes with the component.
 *
 * Token mode: `getToken` fetches a short-lived JWT from your back end (NestJS: see the README); it is
 * called at every (re)connection. Cookie mode: leave `getToken` out and let the back end set the
 * `changesync_token` cookie (`withCredentials: true` when changesync runs on another origin).
 */
import { DestroyRef, Injectable, InjectionToken, inject } from "@angular/core";
import { BehaviorSubject, Observable, Subject, distinctUntilChanged, filter, map, shareReplay } from "rxjs";
import {
  FlowEvents,
  documentsOf,
  type CanvasChange,
  type DataPayload,
  type FlowDocument,
  type FlowEventsOptions,
  type FlowState,
  type FlowStatus,
  type ResyncPayload,
} from "@changesync/client";

export interface ChangesyncConfig {
  /** Where changesync runs, e.g. `https://sync.example.com`; `""` when it is proxied on the app's origin. */
  readonly baseUrl: string;
  readonly getToken?: () => string | Promise<string>;
  readonly withCredentials?: boolean;
  readonly refetch?: FlowEventsOptions["refetch"];
  /** `"patch"` (the client's default): updates come as patches applied to the copy; `"full"`: whole documents. */
  readonly updates?: FlowEventsOptions["updates"];
}

export const CHANGESYNC_CONFIG = new InjectionToken<ChangesyncConfig>("CHANGESYNC_CONFIG");

/** The flow-editor canvas: its board document plus the flow's node and edge documents. */
export interface Canvas {
  readonly board: FlowDocument | null;
  readonly nodes: readonly FlowDocument[];
  readonly edges: readonly FlowDocument[];
}

/** executionId → nodeId → chunks, in arrival order. */
export type Logs = FlowState["logs"];

@Injectable()
export class FlowEventsService {
  private readonly config = inject(CHANGESYNC_CONFIG);
  private flow: FlowEvents | null = null;
  private readonly states = new BehaviorSubject<FlowState | null>(null);
  private readonly payloads = new Subject<DataPayload>();
  private readonly resyncs = new Subject<ResyncPayload>();
  private readonly canvasChanges = new Subject<CanvasChange>();

  /** Everything: documents by collection, logs, `status`, `loaded`, `stale`, `lastEventId`. */
  readonly state$: Observable<FlowState> = this.states.pipe(
    filter((state): state is FlowState => state !== null),
    shareReplay({ bufferSize: 1, refCount: true }),
  );
  /** `connecting` | `live` | `error` (retrying: show a banner, not a dead page). */
  readonly status$: Observable<FlowStatus> = this.state$.pipe(map((state) => state.status), distinctUntilChanged());
  /** SYNC_CANVAS: emits when the board, a node or an edge changed; untouched documents keep their identity. */
  readonly canvas$: Observable<Canvas> = this.state$.pipe(
    map((state) => state.collections),
    distinctUntilChanged(
      (a, b) => a["flowboards"] === b["flowboards"] && a["flow_nodes"] === b["flow_nodes"] && a["flow_edges"] === b["flow_edges"],
    ),
    map((collections) => ({
      board: Object.values(collections["flowboards"] ?? {})[0] ?? null,
      nodes: Object.values(collections["flow_nodes"] ?? {}),
      edges: Object.values(collections["flow_edges"] ?? {}),
    })),
  );
  /**
   * What each SYNC_CANVAS event changed: the ids of the nodes and edges added, changed or removed
   * (matched by `id`, so a reordered array is no change). For animations, undo stacks, dirty marks.
   */
  readonly canvasChanges$: Observable<CanvasChange> = this.canvasChanges.asObservable();
  /** EXECUTION_UPDATE: the latest run (highest ObjectId), or null before the first one. */
  readonly execution$: Observable<FlowDocument | null> = this.state$.pipe(
    map((state) => state.collections["flow_executions"]),
    distinctUntilChanged(),
    map((runs) => Object.entries(runs ?? {}).sort(([a], [b]) => (a < b ? -1 : 1)).at(-1)?.[1] ?? null),
  );
  /** LOG_STREAM: chunks by execution and node, appended as they stream in. */
  readonly logs$: Observable<Logs> = this.state$.pipe(map((state) => state.logs), distinctUntilChanged());
  /** RESYNC events (a non-resumable one means the state was reset and reloads from the SNAPSHOT that follows). */
  readonly resync$: Observable<ResyncPayload> = this.resyncs.asObservable();

  constructor() {
    inject(DestroyRef).onDestroy(() => this.close());
  }

  /** Follows `flowId` (closing the previous flow, if any). */
  open(flowId: string): void {
    this.close();
    const { baseUrl, getToken, withCredentials, refetch, updates } = this.config;
    const flow = new FlowEvents({
      baseUrl,
      flowId,
      ...(getToken && { getToken }),
      ...(withCredentials !== undefined && { withCredentials }),
      ...(refetch && { refetch }),
      ...(updates && { updates }),
    });
    flow.on("state", (state) => this.states.next(state));
    flow.on("status", () => this.states.next(flow.state));
    flow.on("RESYNC", (payload) => this.resyncs.next(payload));
    flow.on("canvas", (change) => this.canvasChanges.next(change));
    for (const type of ["SYNC_CANVAS", "EXECUTION_UPDATE", "LOG_STREAM"] as const) {
      flow.on(type, (payload) => this.payloads.next(payload));
    }
    this.flow = flow;
    this.states.next(flow.state);
  }

  /** The raw events of one type (`SYNC_CANVAS`, `EXECUTION_UPDATE`, `LOG_STREAM`), for animations or audit trails. */
  events$(type: string): Observable<DataPayload> {
    return this.payloads.pipe(filter((payload) => payload.type === type));
  }

  /** The documents of any collection, e.g. a route you added. */
  documents$(collection: string): Observable<FlowDocument[]> {
    return this.state$.pipe(
      distinctUntilChanged((a, b) => a.collections[collection] === b.collections[collection]),
      map((state) => documentsOf(state, collection)),
    );
  }

  close(): void {
    this.flow?.close();
    this.flow = null;
  }
}
