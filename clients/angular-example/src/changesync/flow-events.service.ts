/**
 * FlowEventsService: one flow's live state from changesync, as signals and as RxJS observables.
 *
 * Provide it per component that follows a flow (`providers: [FlowEventsService]`) and give it the
 * flow id to follow, a signal or an observable: `follow(this.flowId)`. Switching ids closes the old
 * stream and opens the new one; null closes it; the component's destruction closes it too.
 *
 * In the browser only: on the server (SSR) nothing is opened, the signals keep their initial values
 * (`status` "idle", `loaded` false) and the first data comes once the app runs in the browser.
 *
 * The connection, its timers and its token requests run outside the Angular zone, so that a stream
 * never keeps the zone busy (the app stays stable, hydration and `whenStable` complete); every value
 * is delivered inside the zone. Without zone.js (`provideZonelessChangeDetection`) signals drive the views.
 */
import { isPlatformBrowser } from "@angular/common";
import {
  DestroyRef,
  Injectable,
  Injector,
  NgZone,
  PLATFORM_ID,
  type Signal,
  computed,
  effect,
  inject,
  isSignal,
  untracked,
} from "@angular/core";
import { toSignal } from "@angular/core/rxjs-interop";
import {
  type CanvasChange,
  DEFAULT_CANVAS_LAYOUT,
  DEFAULT_EVENT_TYPES,
  type DataPayload,
  type DocumentId,
  FlowEvents,
  type FlowEventsError,
  type FlowDocument,
  type FlowState,
  type FlowStatus,
  type LocalEdit,
  type LogText,
  type ResyncPayload,
  documentKey,
} from "@changesync/client";
import { BehaviorSubject, type Observable, Subject, distinctUntilChanged, filter, map, shareReplay } from "rxjs";
import { CHANGESYNC_CONFIG } from "./config";
import {
  type Canvas,
  EMPTY_CANVAS,
  type FlowLogText,
  canvasInputs,
  canvasOf,
  documentsIn,
  documentsInputs,
  documentsOfType,
  executionInputs,
  latestExecution,
  logTextOf,
  sameInputs,
} from "./flow-view";

/** Event types the client always listens to: their documents need no `flow.on(type)`. */
const BUILT_IN_TYPES: ReadonlySet<string> = new Set<string>([...DEFAULT_EVENT_TYPES, "SNAPSHOT", "RESYNC"]);

/** Emits the values built from `inputs` again only when one of the inputs is a new object. */
function view<T>(
  inputs: (state: FlowState | null) => readonly unknown[],
  build: (state: FlowState | null) => T,
): (states: Observable<FlowState | null>) => Observable<T> {
  return (states) =>
    states.pipe(
      map((state) => ({ state, inputs: inputs(state) })),
      distinctUntilChanged((a, b) => sameInputs(a.inputs, b.inputs)),
      map(({ state }) => build(state)),
      shareReplay({ bufferSize: 1, refCount: true }),
    );
}

@Injectable()
export class FlowEventsService {
  private readonly config = inject(CHANGESYNC_CONFIG);
  private readonly zone = inject(NgZone);
  private readonly injector = inject(Injector);
  private readonly browser = isPlatformBrowser(inject(PLATFORM_ID));
  private readonly layout = this.config.canvasLayout ?? DEFAULT_CANVAS_LAYOUT;

  private flow: FlowEvents | null = null;
  /** The unsubscribe functions of the listeners on `flow`. */
  private listeners: (() => void)[] = [];
  /** Stops the current `follow`. */
  private unfollow: (() => void) | null = null;
  /** While `outside` runs: the deliveries it will make when it returns. */
  private pending: (() => void)[] | null = null;
  /** Event types asked for through `documents`/`events$` beyond the built-in ones: listened to on every flow. */
  private readonly customTypes = new Set<string>();

  private readonly states = new BehaviorSubject<FlowState | null>(null);
  private readonly errors = new Subject<FlowEventsError>();
  private readonly payloads = new Subject<DataPayload>();
  private readonly resyncs = new Subject<ResyncPayload>();
  private readonly canvasChanges = new Subject<CanvasChange>();

  // --- observables ------------------------------------------------------------------------------

  /** The flow's `FlowState` after each change of the client's state: one emission per change. */
  readonly state$: Observable<FlowState> = this.states.pipe(filter((state): state is FlowState => state !== null));
  readonly status$: Observable<FlowStatus> = this.states.pipe(
    map((state) => state?.status ?? "idle"),
    distinctUntilChanged(),
  );
  /** True once the flow's first SNAPSHOT was applied (like a Firestore snapshot that is not `fromCache`). */
  readonly loaded$: Observable<boolean> = this.states.pipe(map((state) => state?.loaded ?? false), distinctUntilChanged());
  /** `{ board, nodes, edges }`; emits when the board, a node or an edge changed. */
  readonly canvas$: Observable<Canvas> = this.states.pipe(
    view((state) => canvasInputs(state, this.layout), (state) => canvasOf(state, this.layout)),
  );
  /** The latest run (`flow_executions` document), or null before the first one. */
  readonly execution$: Observable<FlowDocument | null> = this.states.pipe(view(executionInputs, latestExecution));
  /** Log text by execution, then node: seeded by the SNAPSHOT, extended by each live chunk. */
  readonly logs$: Observable<FlowLogText> = this.states.pipe(view((state) => [state?.logText], logTextOf));
  /** The log chunk documents by execution, then node, in arrival order (`state.logs`). */
  readonly logChunks$: Observable<FlowState["logs"]> = this.states.pipe(
    map((state) => state?.logs ?? {}),
    distinctUntilChanged(),
  );
  /**
   * Every error the client reports. `kind` "unauthorized", "forbidden" and "not-found" are final
   * (status "closed", no retry: sign in again, then `reconnect()`); the others are retried.
   */
  readonly error$: Observable<FlowEventsError> = this.errors.asObservable();
  /** RESYNC events (a non-resumable one keeps the data until the SNAPSHOT that follows replaces it). */
  readonly resync$: Observable<ResyncPayload> = this.resyncs.asObservable();
  /** What each SYNC_CANVAS event changed: the ids of the nodes and edges added, changed or removed. */
  readonly canvasChanges$: Observable<CanvasChange> = this.canvasChanges.asObservable();

  // --- signals ----------------------------------------------------------------------------------

  /** The whole `FlowState`, or null while no flow is open. */
  readonly state: Signal<FlowState | null> = toSignal(this.states, { requireSync: true });
  readonly status: Signal<FlowStatus> = toSignal(this.status$, { requireSync: true });
  readonly loaded: Signal<boolean> = toSignal(this.loaded$, { requireSync: true });
  /** True while a non-resumable RESYNC waits for its SNAPSHOT: the data shown is the previous one. */
  readonly resyncing: Signal<boolean> = computed(() => this.state()?.resyncing ?? false);
  /** Why `status` is "error" (retrying) or "closed" (a final refusal); null otherwise. Every error is on `error$`. */
  readonly error: Signal<FlowEventsError | null> = computed(() => this.state()?.error ?? null);
  readonly canvas: Signal<Canvas> = toSignal(this.canvas$, { initialValue: EMPTY_CANVAS });
  readonly execution: Signal<FlowDocument | null> = toSignal(this.execution$, { initialValue: null });
  readonly logs: Signal<FlowLogText> = toSignal(this.logs$, { initialValue: {} });
  /** The latest run's log text by node. */
  readonly executionLogs: Signal<Readonly<Record<string, LogText>>> = computed(() => {
    const run = this.execution();
    return run === null ? {} : (this.logs()[String(run["_id"])] ?? {});
  });
  /** Local writes (`applyLocal`) not yet confirmed by their echo from the stream. */
  readonly pendingWrites: Signal<number> = computed(() => this.state()?.pendingWrites ?? 0);

  constructor() {
    inject(DestroyRef).onDestroy(() => this.close());
  }

  // --- which flow -------------------------------------------------------------------------------

  /**
   * Follows the flow whose id `flowId` holds: each new id closes the previous stream and opens the
   * new one; null closes it. Replaces any earlier `follow`.
   */
  follow(flowId: Signal<string | null> | Observable<string | null>): void {
    this.unfollow?.();
    if (isSignal(flowId)) {
      const watcher = effect(() => {
        const id = flowId();
        untracked(() => this.open(id));
      }, { injector: this.injector });
      this.unfollow = () => watcher.destroy();
    } else {
      const subscription = flowId.subscribe((id) => this.open(id));
      this.unfollow = () => subscription.unsubscribe();
    }
  }

  /**
   * Opens the stream of `flowId` (closing the current one); null closes it. The flow already open
   * stays as it is: after a final refusal, `reconnect()` tries again.
   */
  open(flowId: string | null): void {
    if (flowId !== null && flowId === this.flow?.options.flowId) return;
    this.disconnect();
    if (flowId === null || !this.browser) {
      this.states.next(null);
      return;
    }
    const flow = this.outside(() => {
      const created = new FlowEvents({ ...this.config, flowId, connect: false });
      this.listen(created);
      return created;
    });
    this.flow = flow;
    this.states.next(flow.state);
    this.outside(() => flow.start());
  }

  /** Stops following: closes the stream; the signals return to their initial values. */
  close(): void {
    this.unfollow?.();
    this.unfollow = null;
    this.disconnect();
    this.states.next(null);
  }

  /** Reconnects now, from the last event received (e.g. after the user signed in again). */
  reconnect(): void {
    const flow = this.flow;
    if (flow !== null) this.outside(() => flow.reconnect());
  }

  // --- documents --------------------------------------------------------------------------------

  /**
   * The documents of the collections whose route has event type `eventType`, as a signal; its own
   * types too (they are listened to from now on). `T` is what the app knows of them: not checked.
   */
  documents<T extends object = FlowDocument>(eventType: string): Signal<readonly T[]> {
    this.listenFor(eventType);
    const tables = computed(() => documentsInputs(this.state(), eventType), { equal: sameInputs });
    return computed(() => documentsIn<T>(tables()));
  }

  /** `documents`, as an observable. */
  documents$<T extends object = FlowDocument>(eventType: string): Observable<T[]> {
    this.listenFor(eventType);
    return this.states.pipe(view((state) => documentsInputs(state, eventType), (state) => documentsOfType<T>(state, eventType)));
  }

  /** One document, by collection and `_id`, or null (absent, or no flow open): like `docData`. */
  document<T extends object = FlowDocument>(collection: string, documentId: DocumentId): Signal<T | null> {
    const key = documentKey(documentId);
    return computed(() => (this.state()?.collections[collection]?.[key] as T | undefined) ?? null);
  }

  /** The raw events of one type (`SYNC_CANVAS`, `EXECUTION_UPDATE`, `LOG_STREAM`, or one of the app's own). */
  events$(eventType: string): Observable<DataPayload> {
    this.listenFor(eventType);
    return this.payloads.pipe(filter((payload) => payload.type === eventType));
  }

  // --- local writes -----------------------------------------------------------------------------

  /**
   * Shows the app's own write at once, before its echo arrives. Returns the mutation id to stamp at
   * `meta.mutationId` in the write the app sends to its back end; the echo carrying it confirms the
   * write. `discardLocal(id)` when the write failed.
   */
  applyLocal(edit: LocalEdit): string {
    const flow = this.openFlow();
    // The edit's timeout timer must not keep the zone busy.
    return this.outside(() => flow.applyLocal(edit));
  }

  /** Rolls back a local write (its write failed); false when it is not pending. */
  discardLocal(mutationId: string): boolean {
    const flow = this.flow;
    return flow !== null && this.outside(() => flow.discardLocal(mutationId));
  }

  /** Whether a local write to this document awaits its echo (like Firestore's `hasPendingWrites`). Reactive in templates. */
  hasPendingWrites(collection: string, documentId: DocumentId): boolean {
    this.state(); // a dependency: a template that calls this re-renders when the state changes
    return this.flow?.hasPendingWrites(collection, documentId) ?? false;
  }

  // --- the client -------------------------------------------------------------------------------

  private openFlow(): FlowEvents {
    if (this.flow === null) throw new Error("no flow is open: follow() or open() one first (in the browser)");
    return this.flow;
  }

  /**
   * Runs `action` on the client outside the Angular zone, so that the timers and listeners it sets
   * up do not keep the zone busy. What the client emits meanwhile is delivered once `action`
   * returns, in the caller's zone (a `zone.run` inside a change detection would start another one).
   */
  private outside<T>(action: () => T): T {
    if (this.pending !== null) return this.zone.runOutsideAngular(action);
    const pending: (() => void)[] = [];
    this.pending = pending;
    try {
      return this.zone.runOutsideAngular(action);
    } finally {
      this.pending = null;
      for (const deliver of pending) deliver();
    }
  }

  /** Runs `delivery` in the Angular zone: at once for the client's own events, after `outside` for those its calls cause. */
  private deliver(delivery: () => void): void {
    if (this.pending !== null) this.pending.push(delivery);
    else this.zone.run(delivery);
  }

  private listen(flow: FlowEvents): void {
    this.listeners.push(
      flow.on("state", (state) => this.deliver(() => this.states.next(state))),
      flow.on("error", (error) => this.deliver(() => this.errors.next(error))),
      flow.on("RESYNC", (payload) => {
        if (this.resyncs.observed) this.deliver(() => this.resyncs.next(payload));
      }),
      flow.on("canvas", (change) => {
        if (this.canvasChanges.observed) this.deliver(() => this.canvasChanges.next(change));
      }),
    );
    for (const type of DEFAULT_EVENT_TYPES) this.watch(flow, type);
    for (const type of this.customTypes) this.watch(flow, type);
  }

  private watch(flow: FlowEvents, type: string): void {
    this.listeners.push(
      flow.on(type, (payload: DataPayload) => {
        if (this.payloads.observed) this.deliver(() => this.payloads.next(payload));
      }),
    );
  }

  private listenFor(type: string): void {
    if (BUILT_IN_TYPES.has(type) || this.customTypes.has(type)) return;
    this.customTypes.add(type);
    const flow = this.flow;
    if (flow !== null) this.outside(() => this.watch(flow, type));
  }

  private disconnect(): void {
    for (const unsubscribe of this.listeners) unsubscribe();
    this.listeners = [];
    this.flow?.close();
    this.flow = null;
  }
}
