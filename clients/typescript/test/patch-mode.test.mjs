// Patch-only updates (the default `updates: "patch"`) and the `canvas` event: what each SYNC_CANVAS event changed.
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";

import { FlowEvents, canvasChange, itemChanges } from "../dist/index.js";
import { FakeEventSource } from "./fake-event-source.mjs";
import { FLOW, board, canvas, canvasSnapshot, coalesced, node, patchOnly } from "./payloads.mjs";

const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

const flows = [];
async function live(options = {}, ...payloads) {
  const flow = new FlowEvents({ baseUrl: "https://sync.example.com", flowId: FLOW, EventSource: FakeEventSource, ...options });
  flows.push(flow);
  await settle();
  const source = FakeEventSource.last;
  source.open();
  payloads.forEach((payload, i) => source.emit(payload, `id-${i}`));
  return { flow, source };
}

/** Every `canvas` event of `flow`, from now on. */
function record(flow) {
  const changes = [];
  flow.on("canvas", (change) => changes.push(change));
  return changes;
}

const nodes = (count) => Array.from({ length: count }, (_, i) => ({ id: `n${i}`, position: { x: i, y: 0 } }));
const NONE = { added: [], changed: [], removed: [] };

beforeEach(() => FakeEventSource.reset());
afterEach(() => {
  for (const flow of flows.splice(0)) flow.close();
});

describe("patch-only updates", () => {
  it("asks for ?updates=patch by default, and for full documents with updates: \"full\"", async () => {
    await live();
    assert.equal(FakeEventSource.last.url.searchParams.get("updates"), "patch");
    await live({ updates: "full" });
    assert.equal(FakeEventSource.last.url.searchParams.has("updates"), false, "the server's default");
  });

  it("applies the patch to the copy from the SNAPSHOT, sharing untouched nodes", async () => {
    const { flow, source } = await live({}, canvasSnapshot(board(nodes(20))));
    const before = flow.state.collections.flowboards[FLOW];
    source.emit(patchOnly("flowboards", FLOW, [{ op: "replace", path: "/nodes/3/position/x", value: 99 }]), "u1");
    const after = flow.state.collections.flowboards[FLOW];
    assert.equal(after.nodes[3].position.x, 99);
    assert.equal(after.nodes[4], before.nodes[4]);
    assert.deepEqual(flow.state.stale, {});
  });

  it("a patch that does not apply marks the document stale and refetches it", async () => {
    const requests = [];
    const { flow, source } = await live(
      { refetch: (request) => (requests.push(request), board([{ id: "fetched" }])) },
      canvasSnapshot(board(nodes(2))),
    );
    source.emit(patchOnly("flowboards", FLOW, [{ op: "remove", path: "/nodes/7" }]), "u1");
    assert.deepEqual(flow.state.stale, { flowboards: [FLOW] });
    await settle();
    assert.equal(requests.length, 1);
    assert.deepEqual(flow.state.collections.flowboards[FLOW].nodes, [{ id: "fetched" }]);
    assert.deepEqual(flow.state.stale, {});
  });

  it("a patch for a document it never had is stale too (no SNAPSHOT, e.g. snapshot: false)", async () => {
    const { flow, source } = await live({ snapshot: false });
    source.emit(patchOnly("flow_nodes", "n1", [{ op: "replace", path: "/v", value: 2 }]), "u1");
    assert.deepEqual(flow.state.stale, { flow_nodes: ["n1"] });
  });
});

describe("the canvas event", () => {
  it("a drag: one node changed, by id", async () => {
    const { flow, source } = await live({}, canvasSnapshot(board(nodes(20))));
    const changes = record(flow);
    source.emit(patchOnly("flowboards", FLOW, [{ op: "replace", path: "/nodes/3/position/x", value: 99 }]), "u1");
    assert.equal(changes.length, 1);
    assert.deepEqual(
      { ...changes[0] },
      { collection: "flowboards", documentId: FLOW, operation: "update", stale: false, nodes: { ...NONE, changed: ["n3"] }, edges: NONE },
    );
  });

  it("added, removed and reordered nodes and edges, from patches and from full documents alike", async () => {
    const start = { ...board(nodes(3)), edges: [{ id: "e0", source: "n0", target: "n1" }] };
    const { flow, source } = await live({}, canvasSnapshot(start));
    const changes = record(flow);
    source.emit(
      patchOnly("flowboards", FLOW, [
        { op: "add", path: "/nodes/-", value: { id: "n3", position: { x: 3, y: 0 } } },
        { op: "remove", path: "/nodes/0" },
        { op: "add", path: "/edges/-", value: { id: "e1", source: "n1", target: "n2" } },
      ]),
      "u1",
    );
    assert.deepEqual(changes[0].nodes, { added: ["n3"], changed: [], removed: ["n0"] });
    assert.deepEqual(changes[0].edges, { added: ["e1"], changed: [], removed: [] });
    // Reordering moves every index but changes no node; a full document is diffed the same way.
    const current = flow.state.collections.flowboards[FLOW];
    const reordered = { ...current, nodes: [...current.nodes].reverse() };
    source.emit(canvas("update", reordered, [{ op: "replace", path: "/nodes", value: reordered.nodes }]), "u2");
    assert.deepEqual(changes[1].nodes, NONE);
    const moved = { ...reordered, nodes: reordered.nodes.map((n) => (n.id === "n1" ? { ...n, position: { x: 50, y: 0 } } : n)) };
    source.emit(coalesced("flowboards", FLOW, moved, 3), "c1");
    assert.deepEqual(changes[2].nodes, { ...NONE, changed: ["n1"] });
  });

  it("documents of node and edge collections are items themselves", async () => {
    const { flow, source } = await live({}, canvasSnapshot(board(), [{ _id: "x1", id: "n9", v: 1 }]));
    const changes = record(flow);
    source.emit(patchOnly("flow_nodes", "x1", [{ op: "replace", path: "/v", value: 2 }]), "u1");
    source.emit(node("insert", "x2", { _id: "x2", id: "n10" }), "i1");
    source.emit(node("delete", "x1", null), "d1");
    assert.deepEqual(changes.map((change) => change.nodes), [
      { ...NONE, changed: ["n9"] },
      { ...NONE, added: ["n10"] },
      { ...NONE, removed: ["n9"] },
    ]);
  });

  it("a stale document reports nothing until its refetch, which reports what changed", async () => {
    let release;
    const fetched = new Promise((resolve) => (release = resolve));
    const { flow, source } = await live({ refetch: () => fetched }, canvasSnapshot(board(nodes(2))));
    const changes = record(flow);
    source.emit(patchOnly("flowboards", FLOW, [{ op: "remove", path: "/nodes/9" }]), "u1");
    assert.deepEqual({ stale: changes[0].stale, nodes: changes[0].nodes }, { stale: true, nodes: NONE });
    release(board(nodes(1)));
    await settle();
    assert.deepEqual({ stale: changes[1].stale, nodes: changes[1].nodes }, { stale: false, nodes: { ...NONE, removed: ["n1"] } });
  });

  it("pure helpers: items without an id are not tracked; identical arrays are no change", () => {
    assert.deepEqual(itemChanges([{ id: "a" }, { x: 1 }], [{ id: "a" }, { x: 2 }]), NONE);
    const same = [{ id: "a" }];
    assert.deepEqual(itemChanges(same, same), NONE);
    assert.deepEqual(canvasChange("flowboards", FLOW, "insert", undefined, board(nodes(1))).nodes, { ...NONE, added: ["n0"] });
  });
});
