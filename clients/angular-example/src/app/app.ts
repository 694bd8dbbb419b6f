import { DOCUMENT } from "@angular/common";
import { ChangeDetectionStrategy, Component, inject, signal } from "@angular/core";
import { FlowEditor } from "./flow-editor";

/** The first flow shown: `?flow=` in the page's URL, or changesync's demo flow. */
function initialFlowId(): string {
  return new URLSearchParams(inject(DOCUMENT).location?.search ?? "").get("flow") ?? "demo-flow";
}

@Component({
  selector: "app-root",
  imports: [FlowEditor],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <header>
      <h1>Flow editor</h1>
      <form (submit)="show($event, flowInput.value)">
        <label>Flow <input #flowInput name="flow" [value]="flowId() ?? ''" /></label>
        <button type="submit">Open</button>
        <button type="button" (click)="flowId.set(null)">Close</button>
      </form>
    </header>
    <app-flow-editor [flowId]="flowId()" />
  `,
  styles: `
    header { display: flex; align-items: baseline; gap: 2rem; }
    form { display: flex; gap: 0.5rem; }
  `,
})
export class App {
  protected readonly flowId = signal<string | null>(initialFlowId());

  protected show(event: Event, flowId: string): void {
    event.preventDefault();
    this.flowId.set(flowId.trim() || null);
  }
}
