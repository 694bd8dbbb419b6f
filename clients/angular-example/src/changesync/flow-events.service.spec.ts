import { HttpInterceptorFn, provideHttpClient, withInterceptors } from "@angular/common/http";
import { HttpTestingController, provideHttpClientTesting } from "@angular/common/http/testing";
import {
  ApplicationRef,
  ChangeDetectionStrategy,
  Component,
  ErrorHandler,
  NgZone,
  PLATFORM_ID,
  type EnvironmentProviders,
  type Provider,
  type Signal,
  inject,
  input,
  provideZonelessChangeDetection,
  signal,
} from "@angular/core";
import { TestBed } from "@angular/core/testing";
import type { FlowEventsError, FlowState } from "@changesync/client";
import { Subject } from "rxjs";
import { FakeEventSource } from "../testing/fake-event-source";
import { FLOW_ID, EXECUTION_ID, board, canvasSnapshot, change, execution, logChunk, resync, snapshot } from "../testing/payloads";
import { type ChangesyncConfig, httpToken, provideChangesync } from "./config";
import { FlowEventsService } from "./flow-events.service";

const BASE_URL = "https://sync.test";

/** What reached the application's ErrorHandler during a test: nothing, or the test fails. */
let reported: unknown[] = [];
const collectErrors: Provider = { provide: ErrorHandler, useValue: { handleError: (error: unknown) => reported.push(error) } };

beforeEach(() => {
  reported = [];
});

afterEach(() => {
  expect(reported).toEqual([]);
});

/** What the client's status probe of a refused stream answers: this HTTP status. */
function answering(status: number): NonNullable<ChangesyncConfig["fetch"]> {
  return async () => ({ status, body: null });
}

function configure(
  options: { config?: Partial<ChangesyncConfig>; providers?: (Provider | EnvironmentProviders)[]; withoutEventSource?: boolean } = {},
): void {
  FakeEventSource.reset();
  const config: ChangesyncConfig = {
    baseUrl: BASE_URL,
    fetch: answering(503),
    ...(options.withoutEventSource ? {} : { EventSource: FakeEventSource }),
    ...options.config,
  };
  TestBed.configureTestingModule({
    providers: [provideChangesync(config), FlowEventsService, collectErrors, ...(options.providers ?? [])],
  });
}

function flowService(options: Parameters<typeof configure>[0] = {}): FlowEventsService {
  configure(options);
  return TestBed.inject(FlowEventsService);
}

/** Opens `flowId` and answers like the service: the stream opens, the SNAPSHOT follows. */
function openLoaded(service: FlowEventsService, nodeIds: readonly string[], flowId = FLOW_ID): FakeEventSource {
  service.open(flowId);
  const source = FakeEventSource.last;
  source.open();
  source.send(canvasSnapshot(nodeIds, flowId), "1");
  return source;
}

const nodeIds = (service: FlowEventsService) => service.canvas().nodes.map((node) => node["id"]);

describe("FlowEventsService", () => {
  describe("without a flow", () => {
    it("constructs without an EventSource and opens nothing before a flow id is given", () => {
      const service = flowService({ withoutEventSource: true });
      expect(service.status()).toBe("idle");
      expect(() => service.open(FLOW_ID)).not.toThrow();
      expect(service.loaded()).toBe(false);
      expect(FakeEventSource.instances).toHaveLength(0);
    });

    it("opens no stream at construction", () => {
      flowService();
      expect(FakeEventSource.instances).toHaveLength(0);
    });
  });

  describe("the flow id", () => {
    it("follows a signal: a new id closes the old stream and opens the new one, null closes it", () => {
      const service = flowService();
      const flowId = signal<string | null>("flow-a");
      service.follow(flowId);
      TestBed.tick();
      const first = FakeEventSource.last;
      expect(first.url.pathname).toBe("/flows/flow-a/events");
      first.open();
      first.send(canvasSnapshot(["a1", "a2"], "flow-a"), "1");
      expect(nodeIds(service)).toEqual(["a1", "a2"]);

      flowId.set("flow-b");
      TestBed.tick();
      expect(FakeEventSource.instances).toHaveLength(2);
      expect(first.readyState).toBe(FakeEventSource.CLOSED);
      expect(FakeEventSource.last.url.pathname).toBe("/flows/flow-b/events");
      expect(service.loaded()).toBe(false);
      expect(service.canvas().nodes).toEqual([]);

      // The old stream's listeners are gone: what it still delivers changes nothing.
      first.send(canvasSnapshot(["late"], "flow-a"), "2");
      expect(service.canvas().nodes).toEqual([]);
      FakeEventSource.last.open();
      FakeEventSource.last.send(canvasSnapshot(["b1"], "flow-b"), "1");
      expect(nodeIds(service)).toEqual(["b1"]);

      flowId.set(null);
      TestBed.tick();
      expect(FakeEventSource.openStreams).toEqual([]);
      expect(service.status()).toBe("idle");
      expect(service.state()).toBeNull();
    });

    it("follows an observable", () => {
      const service = flowService();
      const flowIds = new Subject<string | null>();
      service.follow(flowIds);
      flowIds.next("flow-a");
      flowIds.next("flow-b");
      expect(FakeEventSource.instances.map((source) => source.url.pathname)).toEqual([
        "/flows/flow-a/events",
        "/flows/flow-b/events",
      ]);
      expect(FakeEventSource.openStreams).toHaveLength(1);
      flowIds.next(null);
      expect(FakeEventSource.openStreams).toEqual([]);
    });

    it("closes the stream when the component that provides the service is destroyed", () => {
      @Component({
        selector: "app-follower",
        providers: [FlowEventsService],
        changeDetection: ChangeDetectionStrategy.OnPush,
        template: `{{ flow.status() }}`,
      })
      class Follower {
        readonly flowId = input<string | null>(null);
        readonly flow = inject(FlowEventsService);
        constructor() {
          this.flow.follow(this.flowId);
        }
      }
      configure();
      const fixture = TestBed.createComponent(Follower);
      fixture.componentRef.setInput("flowId", FLOW_ID);
      fixture.detectChanges();
      expect(FakeEventSource.openStreams).toHaveLength(1);
      fixture.destroy();
      expect(FakeEventSource.openStreams).toEqual([]);
    });
  });

  describe("server-side rendering", () => {
    it("opens nothing on the server and reports no error", () => {
      const service = flowService({ providers: [{ provide: PLATFORM_ID, useValue: "server" }] });
      const errors: FlowEventsError[] = [];
      service.error$.subscribe((error) => errors.push(error));
      service.follow(signal(FLOW_ID));
      TestBed.tick();
      service.open("flow-b");
      expect(FakeEventSource.instances).toHaveLength(0);
      expect(service.status()).toBe("idle");
      expect(service.loaded()).toBe(false);
      expect(service.error()).toBeNull();
      expect(errors).toEqual([]);
    });
  });

  describe("zones", () => {
    it("connects outside the Angular zone and delivers values inside it", () => {
      const service = flowService();
      const zone = TestBed.inject(NgZone);
      const delivered: boolean[] = [];
      service.status$.subscribe(() => delivered.push(NgZone.isInAngularZone()));
      zone.run(() => service.open(FLOW_ID));
      expect(FakeEventSource.last.createdInAngularZone).toBe(false);
      delivered.length = 0;
      FakeEventSource.last.open();
      expect(service.status()).toBe("live");
      expect(delivered).toEqual([true]);
    });

    it("keeps the zone stable while a reconnection waits", async () => {
      const service = flowService({ config: { reconnectDelayMs: 60_000 } });
      const zone = TestBed.inject(NgZone);
      zone.run(() => service.open(FLOW_ID));
      FakeEventSource.last.fail();
      await vi.waitFor(() => expect(service.status()).toBe("error"));
      expect(zone.hasPendingMacrotasks).toBe(false);
      await TestBed.inject(ApplicationRef).whenStable();
    });

    it("renders without zone.js change detection (zoneless)", async () => {
      @Component({
        selector: "app-node-count",
        providers: [FlowEventsService],
        changeDetection: ChangeDetectionStrategy.OnPush,
        template: `<p>{{ flow.status() }}: {{ flow.canvas().nodes.length }} nodes</p>`,
      })
      class NodeCount {
        readonly flow = inject(FlowEventsService);
        constructor() {
          this.flow.follow(signal(FLOW_ID));
        }
      }
      configure({ providers: [provideZonelessChangeDetection()] });
      const fixture = TestBed.createComponent(NodeCount);
      await fixture.whenStable();
      FakeEventSource.last.open();
      FakeEventSource.last.send(canvasSnapshot(["n1", "n2", "n3"]), "1");
      await fixture.whenStable();
      expect((fixture.nativeElement as HTMLElement).textContent).toContain("live: 3 nodes");
    });
  });

  describe("documents", () => {
    interface AuditEntry {
      readonly _id: string;
      readonly action: string;
    }

    it("delivers the documents of the app's own event types, typed", () => {
      const service = flowService();
      const entries: Signal<readonly AuditEntry[]> = service.documents<AuditEntry>("AUDIT");
      const emitted: AuditEntry[][] = [];
      service.documents$<AuditEntry>("AUDIT").subscribe((documents) => emitted.push(documents));
      service.open(FLOW_ID);
      const source = FakeEventSource.last;
      expect(source.types).toContain("AUDIT");
      source.open();
      source.send(snapshot({ audit_log: { eventType: "AUDIT", documents: [{ _id: "e1", action: "created" }] } }), "1");
      source.send(change("AUDIT", "audit_log", "insert", { _id: "e2", action: "renamed" }), "2");
      expect(entries().map((entry) => entry.action)).toEqual(["created", "renamed"]);
      expect(emitted.at(-1)?.map((entry) => entry._id)).toEqual(["e1", "e2"]);
      expectTypeOf(entries).toEqualTypeOf<Signal<readonly AuditEntry[]>>();

      // The next flow listens to the type too.
      service.open("flow-b");
      expect(FakeEventSource.last.types).toContain("AUDIT");
    });

    it("keeps a documents signal's value while other collections change", () => {
      const service = flowService();
      const entries = service.documents<AuditEntry>("AUDIT");
      const source = openLoaded(service, ["n1"]);
      source.send(change("AUDIT", "audit_log", "insert", { _id: "e1", action: "created" }), "2");
      const before = entries();
      source.send(change("SYNC_CANVAS", "flowboards", "replace", board(["n1", "n2"])), "3");
      expect(entries()).toBe(before);
    });

    it("reads one document by collection and id, like docData", () => {
      const service = flowService();
      const current = service.document<{ name: string }>("flowboards", FLOW_ID);
      expect(current()).toBeNull();
      openLoaded(service, ["n1"]);
      expect(current()?.name).toBe(`Board ${FLOW_ID}`);
    });
  });

  describe("loading", () => {
    it("is loaded once the SNAPSHOT is applied, not when the stream opens", () => {
      const service = flowService();
      service.open(FLOW_ID);
      expect(service.loaded()).toBe(false);
      FakeEventSource.last.open();
      expect(service.status()).toBe("live");
      expect(service.loaded()).toBe(false);
      FakeEventSource.last.send(canvasSnapshot(["n1"]), "1");
      expect(service.loaded()).toBe(true);
    });

    it("keeps the canvas through a non-resumable RESYNC until its SNAPSHOT replaces it", () => {
      const service = flowService();
      const counts: number[] = [];
      service.canvas$.subscribe((canvas) => counts.push(canvas.nodes.length));
      const source = openLoaded(service, ["n1", "n2"]);
      counts.length = 0;
      source.send(resync(false), "2");
      expect(service.resyncing()).toBe(true);
      expect(nodeIds(service)).toEqual(["n1", "n2"]);
      source.send(canvasSnapshot(["n3"]), "3");
      expect(service.resyncing()).toBe(false);
      expect(nodeIds(service)).toEqual(["n3"]);
      expect(counts).toEqual([1]);
    });

    it("emits the state once per change of the client's state", () => {
      const service = flowService();
      const states: FlowState[] = [];
      service.state$.subscribe((state) => states.push(state));
      service.open(FLOW_ID);
      const before = states.length;
      FakeEventSource.last.open();
      expect(states.length - before).toBe(1);
      FakeEventSource.last.send(canvasSnapshot(["n1"]), "1");
      expect(states.length - before).toBe(2);
      expect(new Set(states).size).toBe(states.length);
    });
  });

  describe("errors", () => {
    beforeEach(() => vi.useFakeTimers());
    afterEach(() => vi.useRealTimers());

    it.each([
      [401, "unauthorized"],
      [403, "forbidden"],
      [404, "not-found"],
    ])("stops on a %i and reports it, without retrying", async (httpStatus, kind) => {
      const service = flowService({ config: { fetch: answering(httpStatus), reconnectDelayMs: 10 } });
      const errors: FlowEventsError[] = [];
      service.error$.subscribe((error) => errors.push(error));
      service.open(FLOW_ID);
      for (let attempt = 0; attempt < 5 && service.status() !== "closed"; attempt++) {
        await vi.advanceTimersByTimeAsync(0);
        FakeEventSource.last.fail();
        await vi.advanceTimersByTimeAsync(1_000);
      }
      expect(service.status()).toBe("closed");
      expect(errors.at(-1)).toMatchObject({ kind, status: httpStatus });
      expect(service.error()).toBe(errors.at(-1));
      const streams = FakeEventSource.instances.length;
      await vi.advanceTimersByTimeAsync(10 * 60_000);
      expect(FakeEventSource.instances).toHaveLength(streams);
    });

    it("reports a retried failure, and clears it once the stream is live again", async () => {
      const service = flowService({ config: { fetch: answering(503), reconnectDelayMs: 10 } });
      service.open(FLOW_ID);
      FakeEventSource.last.fail();
      await vi.advanceTimersByTimeAsync(0);
      expect(service.status()).toBe("error");
      expect(service.error()).toMatchObject({ kind: "server", status: 503 });
      await vi.advanceTimersByTimeAsync(1_000);
      expect(FakeEventSource.instances.length).toBeGreaterThan(1);
      FakeEventSource.last.open();
      expect(service.status()).toBe("live");
      expect(service.error()).toBeNull();
    });
  });

  describe("tokens", () => {
    it("fetches the token with HttpClient, through the app's interceptors", async () => {
      const session: HttpInterceptorFn = (request, next) => next(request.clone({ setHeaders: { "X-Session": "s-1" } }));
      FakeEventSource.reset();
      TestBed.configureTestingModule({
        providers: [
          provideHttpClient(withInterceptors([session])),
          provideHttpClientTesting(),
          provideChangesync(() => ({
            baseUrl: BASE_URL,
            EventSource: FakeEventSource,
            fetch: answering(503),
            getToken: httpToken("/api/changesync/token"),
          })),
          FlowEventsService,
          collectErrors,
        ],
      });
      const service = TestBed.inject(FlowEventsService);
      const http = TestBed.inject(HttpTestingController);
      service.open(FLOW_ID);
      const request = await vi.waitFor(() => http.expectOne("/api/changesync/token"));
      expect(request.request.headers.get("X-Session")).toBe("s-1");
      request.flush("token-1\n");
      await vi.waitFor(() => expect(FakeEventSource.instances).toHaveLength(1));
      expect(FakeEventSource.last.url.searchParams.get("access_token")).toBe("token-1");
      http.verify();
    });
  });

  describe("the run and its logs", () => {
    it("shows the latest run and each node's log text, from the SNAPSHOT on", () => {
      const service = flowService();
      service.open(FLOW_ID);
      const source = FakeEventSource.last;
      source.open();
      source.send(
        snapshot(
          {
            flowboards: { eventType: "SYNC_CANVAS", documents: [board(["n1", "n2"])] },
            flow_executions: { eventType: "EXECUTION_UPDATE", documents: [execution("running", { n1: "running" })] },
          },
          [{ nodeId: "n1", text: "Hello " }],
        ),
        "1",
      );
      source.send(logChunk("n1", "world"), "2");
      source.send(change("EXECUTION_UPDATE", "flow_executions", "replace", execution("succeeded", { n1: "succeeded" })), "3");
      expect(service.execution()?.["status"]).toBe("succeeded");
      expect(service.executionLogs()["n1"]?.text).toBe("Hello world");
      expect(service.logs()[EXECUTION_ID]?.["n1"]?.text).toBe("Hello world");
    });
  });

  describe("local writes", () => {
    it("shows a local write at once and counts it until its echo arrives", () => {
      const service = flowService();
      const source = openLoaded(service, ["n1"]);
      const mutationId = service.applyLocal({
        collection: "flowboards",
        documentId: FLOW_ID,
        patch: [{ op: "replace", path: "/name", value: "Renamed" }],
      });
      expect(service.canvas().board?.["name"]).toBe("Renamed");
      expect(service.pendingWrites()).toBe(1);
      expect(service.hasPendingWrites("flowboards", FLOW_ID)).toBe(true);
      source.send({ ...change("SYNC_CANVAS", "flowboards", "replace", { ...board(["n1"]), name: "Renamed" }), origin: mutationId }, "2");
      expect(service.pendingWrites()).toBe(0);
      expect(service.hasPendingWrites("flowboards", FLOW_ID)).toBe(false);
      expect(service.canvas().board?.["name"]).toBe("Renamed");
    });

    it("rolls a local write back when the app discards it", () => {
      const service = flowService();
      openLoaded(service, ["n1"]);
      const mutationId = service.applyLocal({
        collection: "flowboards",
        documentId: FLOW_ID,
        patch: [{ op: "replace", path: "/name", value: "Renamed" }],
      });
      expect(service.discardLocal(mutationId)).toBe(true);
      expect(service.canvas().board?.["name"]).toBe(`Board ${FLOW_ID}`);
      expect(service.pendingWrites()).toBe(0);
      expect(service.discardLocal(mutationId)).toBe(false);
    });

    it("waits for the echo without keeping the zone busy", () => {
      const service = flowService();
      const zone = TestBed.inject(NgZone);
      openLoaded(service, ["n1"]);
      zone.run(() =>
        service.applyLocal({ collection: "flowboards", documentId: FLOW_ID, patch: [{ op: "replace", path: "/name", value: "x" }] }),
      );
      expect(service.pendingWrites()).toBe(1);
      expect(zone.hasPendingMacrotasks).toBe(false);
    });

    it("refuses a local write while no flow is open", () => {
      const service = flowService();
      expect(() => service.applyLocal({ collection: "flowboards", documentId: FLOW_ID, patch: [] })).toThrow(/no flow is open/);
    });
  });
});
