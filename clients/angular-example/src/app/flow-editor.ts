import { HttpClient } from "@angular/common/http";
import { ChangeDetectionStrategy, Component, computed, inject, input } from "@angular/core";
import type { FlowDocument, PatchOperation } from "@changesync/client";
import { BOARD_COLLECTION, FlowEventsService } from "../changesync";

/** A node's box on the canvas, in the flow's units. */
const NODE_WIDTH = 140;
const NODE_HEIGHT = 48;
/** Room kept around the nodes, so that the outermost boxes are not cut. */
const MARGIN = 24;

/** What the flow's documents hold of a node, as far as this view is concerned. */
interface FlowNode {
  readonly id: string;
  readonly position?: { readonly x?: number; readonly y?: number };
  readonly data?: { readonly label?: string };
}

interface FlowEdge {
  readonly id: string;
  readonly source: string;
  readonly target: string;
}

interface NodeView {
  readonly id: string;
  readonly label: string;
  readonly x: number;
  readonly y: number;
  /** The node's status in the latest run, or "idle". */
  readonly status: string;
}

interface EdgeView {
  readonly id: string;
  readonly x1: number;
  readonly y1: number;
  readonly x2: number;
  readonly y2: number;
}

function isNode(document: FlowDocument): document is FlowDocument & FlowNode {
  return typeof document["id"] === "string";
}

function isEdge(document: FlowDocument): document is FlowDocument & FlowEdge {
  return typeof document["id"] === "string" && typeof document["source"] === "string" && typeof document["target"] === "string";
}

/** The run's status of each node: `execution.nodes[nodeId].status`. */
function nodeStatuses(run: FlowDocument | null): Readonly<Record<string, string>> {
  const nodes = run?.["nodes"];
  if (typeof nodes !== "object" || nodes === null) return {};
  return Object.fromEntries(
    Object.entries(nodes as Record<string, { status?: unknown } | null>).map(([id, node]) => [id, String(node?.status ?? "idle")]),
  );
}

/** One flow: its canvas (nodes and edges), the latest run, and each node's log output. */
@Component({
  selector: "app-flow-editor",
  providers: [FlowEventsService],
  changeDetection: ChangeDetectionStrategy.OnPush,
  templateUrl: "./flow-editor.html",
  styleUrl: "./flow-editor.css",
})
export class FlowEditor {
  readonly flowId = input<string | null>(null);
  protected readonly flow = inject(FlowEventsService);
  private readonly http = inject(HttpClient);
  protected readonly boards = BOARD_COLLECTION;

  protected readonly run = this.flow.execution;
  protected readonly nodes = computed<NodeView[]>(() => {
    const statuses = nodeStatuses(this.run());
    return this.flow.canvas().nodes.filter(isNode).map((node) => ({
      id: node.id,
      label: node.data?.label ?? node.id,
      x: node.position?.x ?? 0,
      y: node.position?.y ?? 0,
      status: statuses[node.id] ?? "idle",
    }));
  });
  protected readonly edges = computed<EdgeView[]>(() => {
    const byId = new Map(this.nodes().map((node) => [node.id, node]));
    return this.flow.canvas().edges.filter(isEdge).flatMap((edge) => {
      const source = byId.get(edge.source);
      const target = byId.get(edge.target);
      if (source === undefined || target === undefined) return [];
      const x1 = source.x + NODE_WIDTH;
      const y1 = source.y + NODE_HEIGHT / 2;
      return [{ id: edge.id, x1, y1, x2: target.x, y2: target.y + NODE_HEIGHT / 2 }];
    });
  });
  protected readonly viewBox = computed(() => {
    const nodes = this.nodes();
    const right = Math.max(0, ...nodes.map((node) => node.x + NODE_WIDTH));
    const bottom = Math.max(0, ...nodes.map((node) => node.y + NODE_HEIGHT));
    return `${-MARGIN} ${-MARGIN} ${right + 2 * MARGIN} ${bottom + 2 * MARGIN}`;
  });
  protected readonly nodeWidth = NODE_WIDTH;
  protected readonly nodeHeight = NODE_HEIGHT;

  constructor() {
    this.flow.follow(this.flowId);
  }

  /**
   * Renames the board: shown at once, then written by the app's back end, which stamps the
   * mutation id at `meta.mutationId`; its echo on the stream settles the edit. A failed write rolls it back.
   */
  protected rename(event: Event, name: string): void {
    event.preventDefault();
    const flowId = this.flowId();
    if (flowId === null || !name.trim()) return;
    const patch: PatchOperation[] = [{ op: "add", path: "/name", value: name.trim() }];
    const mutationId = this.flow.applyLocal({ collection: BOARD_COLLECTION, documentId: flowId, patch });
    this.http.patch(`/api/flows/${encodeURIComponent(flowId)}`, { patch, mutationId }).subscribe({
      error: () => this.flow.discardLocal(mutationId),
    });
  }
}
