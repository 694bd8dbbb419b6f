import { provideHttpClient } from "@angular/common/http";
import { HttpTestingController, provideHttpClientTesting } from "@angular/common/http/testing";
import { provideZonelessChangeDetection } from "@angular/core";
import { type ComponentFixture, TestBed } from "@angular/core/testing";
import { provideChangesync } from "../changesync";
import { FakeEventSource } from "../testing/fake-event-source";
import { FLOW_ID, board, change, execution, logChunk, snapshot } from "../testing/payloads";
import { App } from "./app";
import { FlowEditor } from "./flow-editor";

function configure(): void {
  FakeEventSource.reset();
  TestBed.configureTestingModule({
    providers: [
      provideZonelessChangeDetection(),
      provideHttpClient(),
      provideHttpClientTesting(),
      provideChangesync({ baseUrl: "https://sync.test", EventSource: FakeEventSource, fetch: async () => ({ status: 503 }) }),
    ],
  });
}

function text(fixture: ComponentFixture<unknown>, selector: string): string[] {
  const elements = (fixture.nativeElement as HTMLElement).querySelectorAll(selector);
  return Array.from(elements, (element) => element.textContent?.trim() ?? "");
}

function attribute(fixture: ComponentFixture<unknown>, selector: string, name: string): (string | null)[] {
  const elements = (fixture.nativeElement as HTMLElement).querySelectorAll(selector);
  return Array.from(elements, (element) => element.getAttribute(name));
}

describe("FlowEditor", () => {
  it("renders the canvas and each node's log output, and follows live changes", async () => {
    configure();
    const fixture = TestBed.createComponent(FlowEditor);
    fixture.componentRef.setInput("flowId", FLOW_ID);
    await fixture.whenStable();
    expect(text(fixture, ".placeholder")).toEqual(["Loading the flow…"]);

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
    await fixture.whenStable();
    expect(text(fixture, "h2")).toEqual([`Board ${FLOW_ID}`]);
    expect(text(fixture, ".node text")).toEqual(["Step n1", "Step n2"]);
    expect(attribute(fixture, ".node", "data-status")).toEqual(["running", "idle"]);
    expect(attribute(fixture, ".edge", "data-edge-id")).toEqual(["e-n1-n2"]);
    expect(text(fixture, '.logs li[data-node-id="n1"] pre')).toEqual(["Hello"]);

    source.send(logChunk("n1", "world"), "2");
    source.send(change("SYNC_CANVAS", "flowboards", "replace", board(["n1", "n2", "n3"])), "3");
    await fixture.whenStable();
    expect(text(fixture, '.logs li[data-node-id="n1"] pre')).toEqual(["Hello world"]);
    expect(attribute(fixture, ".node", "data-node-id")).toEqual(["n1", "n2", "n3"]);
    expect(attribute(fixture, ".edge", "data-edge-id")).toEqual(["e-n1-n2", "e-n2-n3"]);
  });
});

describe("FlowEditor's rename", () => {
  async function loadedEditor(): Promise<ComponentFixture<FlowEditor>> {
    configure();
    const fixture = TestBed.createComponent(FlowEditor);
    fixture.componentRef.setInput("flowId", FLOW_ID);
    await fixture.whenStable();
    FakeEventSource.last.open();
    FakeEventSource.last.send(snapshot({ flowboards: { eventType: "SYNC_CANVAS", documents: [board(["n1"])] } }), "1");
    await fixture.whenStable();
    return fixture;
  }

  async function rename(fixture: ComponentFixture<FlowEditor>, name: string): Promise<void> {
    const page = fixture.nativeElement as HTMLElement;
    (page.querySelector(".rename input") as HTMLInputElement).value = name;
    (page.querySelector(".rename") as HTMLFormElement).dispatchEvent(new Event("submit"));
    await fixture.whenStable();
  }

  it("shows the new name at once, and settles it when its echo arrives", async () => {
    const fixture = await loadedEditor();
    await rename(fixture, "Renamed");
    expect(text(fixture, "h2")[0]).toMatch(/^Renamed\s+saving…$/);
    const write = TestBed.inject(HttpTestingController).expectOne(`/api/flows/${FLOW_ID}`);
    const { mutationId } = write.request.body as { mutationId: string };
    write.flush({});
    FakeEventSource.last.send({ ...change("SYNC_CANVAS", "flowboards", "replace", { ...board(["n1"]), name: "Renamed" }), origin: mutationId }, "2");
    await fixture.whenStable();
    expect(text(fixture, "h2")).toEqual(["Renamed"]);
  });

  it("rolls the name back when the write fails", async () => {
    const fixture = await loadedEditor();
    await rename(fixture, "Renamed");
    TestBed.inject(HttpTestingController)
      .expectOne(`/api/flows/${FLOW_ID}`)
      .flush("refused", { status: 403, statusText: "Forbidden" });
    await fixture.whenStable();
    expect(text(fixture, "h2")).toEqual([`Board ${FLOW_ID}`]);
  });
});

describe("App", () => {
  it("opens the flow the form names, closing the previous one", async () => {
    configure();
    const fixture = TestBed.createComponent(App);
    await fixture.whenStable();
    expect(FakeEventSource.last.url.pathname).toBe("/flows/demo-flow/events");

    const page = fixture.nativeElement as HTMLElement;
    const input = page.querySelector("input") as HTMLInputElement;
    input.value = "other-flow";
    (page.querySelector("form") as HTMLFormElement).dispatchEvent(new Event("submit"));
    await fixture.whenStable();
    expect(FakeEventSource.openStreams.map((source) => source.url.pathname)).toEqual(["/flows/other-flow/events"]);

    (page.querySelector('button[type="button"]') as HTMLButtonElement).click();
    await fixture.whenStable();
    expect(FakeEventSource.openStreams).toEqual([]);
    expect(text(fixture, ".status")).toEqual(["No flow open."]);
  });
});
