// Local edits shown before their echo (applyLocal): no rubber-banding while echoes lag behind.
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";

import { JsonPatchError } from "../dist/index.js";
import { FakeEventSource } from "./fake-event-source.mjs";
import { closeAll, live, record } from "./helpers.mjs";
import { FLOW, board, canvasSnapshot, node, patchOnly, resync } from "./payloads.mjs";

beforeEach(() => FakeEventSource.reset());
afterEach(closeAll);

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const start = () => board([{ id: "n0", position: { x: 0, y: 0 }, data: { label: "Start" } }, { id: "n1", position: { x: 5, y: 5 } }]);
const moveX = (x, index = 0) => [{ op: "replace", path: `/nodes/${index}/position/x`, value: x }];
const shownX = (flow, index = 0) => flow.state.collections.flowboards[FLOW].nodes[index]?.position.x;
/** The server's echo of a write to the board: a patch-only update, with the writer's mutation id as `origin`. */
const echo = (patch, origin) => ({ ...patchOnly("flowboards", FLOW, patch), ...(origin && { origin }) });
const edit = (patch) => ({ collection: "flowboards", documentId: FLOW, patch });

describe("applyLocal", () => {
  it("shows the edit at once, counts it pending, and its echo settles it", async () => {
    const { flow, source } = await live({}, canvasSnapshot(start()));
    const before = flow.state.collections.flowboards[FLOW];
    const id = flow.applyLocal(edit(moveX(40)));
    assert.match(id, UUID);
    assert.equal(shownX(flow), 40);
    assert.equal(flow.state.collections.flowboards[FLOW].nodes[1], before.nodes[1], "untouched nodes keep their identity");
    assert.equal(flow.state.pendingWrites, 1);
    assert.equal(flow.hasPendingWrites("flowboards", FLOW), true);
    assert.equal(flow.hasPendingWrites("flowboards", "other"), false);
    source.emit(echo(moveX(40), id), "e1");
    assert.equal(shownX(flow), 40);
    assert.equal(flow.state.pendingWrites, 0);
    assert.equal(flow.hasPendingWrites("flowboards", FLOW), false);
  });

  it("a patch that does not apply throws and records nothing", async () => {
    const { flow } = await live({}, canvasSnapshot(start()));
    assert.throws(() => flow.applyLocal(edit([{ op: "replace", path: "/nodes/9/position/x", value: 1 }])), JsonPatchError);
    assert.equal(flow.state.pendingWrites, 0);
    assert.equal(flow.hasPendingWrites("flowboards", FLOW), false);
  });

  it("mutation ids are fresh", async () => {
    const { flow } = await live({}, canvasSnapshot(start()));
    const ids = new Set(Array.from({ length: 50 }, (_, i) => flow.applyLocal(edit(moveX(i)))));
    assert.equal(ids.size, 50);
  });

  it("a drag of 30 moves, echoed late and interleaved with another writer's change: the node never jumps back", async () => {
    const { flow, source } = await live({}, canvasSnapshot(start()));
    const shown = [];
    flow.on("state", () => shown.push(shownX(flow)));
    const canvas = record(flow, "canvas");
    const ids = [];
    let echoed = 0;
    for (let move = 1; move <= 30; move++) {
      ids.push(flow.applyLocal(edit(moveX(move * 10))));
      // The back end writes 3 to 5 moves behind; another writer renames the node meanwhile.
      while (echoed < move - 3 - (move % 3)) {
        echoed++;
        source.emit(echo(moveX(echoed * 10), ids[echoed - 1]), `m${echoed}`);
        if (echoed === 7) source.emit(echo([{ op: "replace", path: "/nodes/0/data/label", value: "Renamed" }]), "rename");
      }
    }
    assert.ok(flow.state.pendingWrites > 0, "echoes were still on their way when the drag ended");
    while (echoed < 30) {
      echoed++;
      source.emit(echo(moveX(echoed * 10), ids[echoed - 1]), `m${echoed}`);
    }
    for (let i = 1; i < shown.length; i++) assert.ok(shown[i] >= shown[i - 1], `moved back: ${shown.join(" ")}`);
    assert.equal(shownX(flow), 300, "where the user left it");
    assert.equal(flow.state.collections.flowboards[FLOW].nodes[0].data.label, "Renamed", "the other writer's change shows");
    assert.equal(flow.state.pendingWrites, 0);
    const echoChanges = canvas.filter((change) => change.nodes.changed.length > 0).length;
    assert.equal(echoChanges, 1, "only the rename changed what is shown; the echoes did not");
  });

  it("an echo settles its edit and every older edit of the document (one writer's writes are ordered)", async () => {
    const { flow, source } = await live({}, canvasSnapshot(start()));
    const ids = [10, 20, 30, 40].map((x) => flow.applyLocal(edit(moveX(x))));
    source.emit(echo(moveX(30), ids[2]), "m3");
    assert.equal(flow.state.pendingWrites, 1);
    assert.equal(shownX(flow), 40);
    source.emit(echo(moveX(40), ids[3]), "m4");
    assert.equal(flow.state.pendingWrites, 0);
  });

  it("an echo of another document's edit settles nothing here", async () => {
    const { flow, source } = await live({}, canvasSnapshot(start(), [{ _id: "x1", v: 0 }]));
    const mine = flow.applyLocal(edit(moveX(10)));
    const other = flow.applyLocal({ collection: "flow_nodes", documentId: "x1", patch: [{ op: "replace", path: "/v", value: 1 }] });
    source.emit(echo(moveX(99), other), "foreign");
    assert.equal(shownX(flow), 10, "the board's own pending edit still shows on the new base");
    assert.equal(flow.hasPendingWrites("flowboards", FLOW), true);
    source.emit({ ...patchOnly("flow_nodes", "x1", [{ op: "replace", path: "/v", value: 1 }]), origin: other }, "x");
    assert.equal(flow.hasPendingWrites("flow_nodes", "x1"), false);
    assert.equal(flow.hasPendingWrites("flowboards", FLOW), true);
    void mine;
  });

  it("another writer's change that makes an edit inapplicable drops it: a conflict, not a connection error", async () => {
    const { flow, source } = await live({}, canvasSnapshot(start()));
    const errors = record(flow, "error");
    const id = flow.applyLocal(edit(moveX(70, 1)));
    const kept = flow.applyLocal(edit(moveX(5, 0)));
    source.emit(echo([{ op: "remove", path: "/nodes/1" }]), "removed");
    assert.deepEqual(errors.map((error) => [error.kind, error.mutationId, error.terminal]), [["conflict", id, false]]);
    assert.equal(flow.state.collections.flowboards[FLOW].nodes.length, 1);
    assert.equal(shownX(flow), 5, "the edit that still applies stays");
    assert.equal(flow.state.pendingWrites, 1);
    assert.equal(flow.status, "live");
    void kept;
  });

  it("full documents (updates: \"full\") and deletes rebase too", async () => {
    const { flow, source } = await live({ updates: "full" }, canvasSnapshot(start(), [{ _id: "x1", v: 0, w: 0 }]));
    const errors = record(flow, "error");
    flow.applyLocal({ collection: "flow_nodes", documentId: "x1", patch: [{ op: "replace", path: "/v", value: 1 }] });
    source.emit(node("update", "x1", { _id: "x1", v: 0, w: 9 }, [{ op: "replace", path: "/w", value: 9 }]), "u");
    assert.deepEqual(flow.state.collections.flow_nodes.x1, { _id: "x1", v: 1, w: 9 });
    source.emit(node("delete", "x1", null), "d");
    assert.equal("x1" in flow.state.collections.flow_nodes, false);
    assert.deepEqual(errors.map((error) => error.kind), ["conflict"]);
    assert.equal(flow.state.pendingWrites, 0);
  });
});

describe("rolling back", () => {
  it("discardLocal drops one edit; the later ones stay", async () => {
    const { flow } = await live({}, canvasSnapshot(start()));
    const first = flow.applyLocal(edit(moveX(10, 0)));
    flow.applyLocal(edit(moveX(20, 1)));
    assert.equal(flow.discardLocal(first), true);
    assert.equal(shownX(flow, 0), 0, "back to the server's version");
    assert.equal(shownX(flow, 1), 20);
    assert.equal(flow.state.pendingWrites, 1);
    assert.equal(flow.discardLocal(first), false, "no longer pending");
    assert.equal(flow.discardLocal("unknown"), false);
  });

  it("an edit never echoed is dropped after pendingTimeoutMs, and the document shows its base again", async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const { flow } = await live({ pendingTimeoutMs: 5000 }, canvasSnapshot(start()));
    const errors = record(flow, "error");
    const id = flow.applyLocal(edit(moveX(10)));
    t.mock.timers.tick(4999);
    assert.equal(shownX(flow), 10);
    t.mock.timers.tick(1);
    assert.equal(shownX(flow), 0);
    assert.equal(flow.state.pendingWrites, 0);
    assert.deepEqual(errors.map((error) => [error.kind, error.mutationId]), [["pending-timeout", id]]);
  });

  it("a settled edit's timer is cancelled", async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const { flow, source } = await live({ pendingTimeoutMs: 5000 }, canvasSnapshot(start()));
    const errors = record(flow, "error");
    const id = flow.applyLocal(edit(moveX(10)));
    source.emit(echo(moveX(10), id), "m1");
    t.mock.timers.tick(60_000);
    assert.deepEqual(errors, []);
    assert.equal(shownX(flow), 10);
  });
});

describe("a SNAPSHOT", () => {
  it("replaces the bases and replays pending edits; an edit the new base already shows is settled, with older ones", async () => {
    const { flow, source } = await live({}, canvasSnapshot(start()));
    flow.applyLocal(edit(moveX(10)));
    flow.applyLocal(edit(moveX(20)));
    flow.applyLocal(edit(moveX(30)));
    const moved = start();
    moved.nodes[0].position.x = 20; // the second write reached MongoDB before the snapshot was read
    moved.nodes[1].position.y = 77; // and someone else moved the other node
    source.emit(resync("history-lost", false), "r");
    source.emit(canvasSnapshot(moved), "s2");
    assert.equal(shownX(flow), 30);
    assert.equal(flow.state.collections.flowboards[FLOW].nodes[1].position.y, 77);
    assert.equal(flow.state.pendingWrites, 1, "the first two are settled; the third waits for its echo");
  });

  it("a document missing from the new SNAPSHOT drops the edits made to it", async () => {
    const { flow, source } = await live({}, canvasSnapshot(start(), [{ _id: "x1", v: 0 }]));
    const errors = record(flow, "error");
    flow.applyLocal({ collection: "flow_nodes", documentId: "x1", patch: [{ op: "replace", path: "/v", value: 1 }] });
    source.emit(resync("history-lost", false), "r");
    assert.deepEqual(flow.state.collections.flow_nodes.x1, { _id: "x1", v: 1 }, "kept while resyncing");
    source.emit(canvasSnapshot(start()), "s2");
    assert.equal("x1" in flow.state.collections.flow_nodes, false);
    assert.deepEqual(errors.map((error) => error.kind), ["conflict"]);
  });
});
