// Minimal wiring (the README's snippet): configure once, then one FlowEventsService per editor component.
import { Component, inject, input, type ApplicationConfig, type OnInit } from "@angular/core";
import { toSignal } from "@angular/core/rxjs-interop";
import { CHANGESYNC_CONFIG, FlowEventsService } from "./flow-events.service.js";

export const appConfig: ApplicationConfig = {
  providers: [{
    provide: CHANGESYNC_CONFIG,
    useValue: {
      baseUrl: "https://sync.example.com", // changesync, with CORS allowing this app's origin
      // A 5-minute JWT that the NestJS back end mints for the signed-in user; fetched at every (re)connection.
      getToken: () => fetch("/api/changesync/token", { credentials: "include" }).then((r) => r.text()),
    },
  }],
};

@Component({
  selector: "app-flow-editor",
  providers: [FlowEventsService], // one stream per open editor, closed with it
  template: `@if (status() !== "live") { <p role="status">{{ status() === "error" ? "Offline, retrying…" : "Connecting…" }}</p> }
    <h2>{{ canvas()?.board?.["name"] }}: {{ canvas()?.nodes?.length }} nodes, run {{ run()?.["status"] ?? "idle" }}</h2>`,
})
export class FlowEditorComponent implements OnInit {
  readonly flowId = input.required<string>();
  private readonly flow = inject(FlowEventsService);
  protected readonly status = toSignal(this.flow.status$, { initialValue: "connecting" });
  protected readonly canvas = toSignal(this.flow.canvas$);   // { board, nodes, edges }
  protected readonly run = toSignal(this.flow.execution$);    // latest flow_executions document
  protected readonly logs = toSignal(this.flow.logs$);        // executionId → nodeId → chunks
  ngOnInit(): void { this.flow.open(this.flowId()); }
}
