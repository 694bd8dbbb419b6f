// `state.loaded`, and the logs: O(1) appends, pruning by execution, and `logText` seeded from the SNAPSHOT.
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";

import { initialState, reduce } from "../dist/index.js";
import { FakeEventSource } from "./fake-event-source.mjs";
import { closeAll, flush, live, open } from "./helpers.mjs";
import { FLOW, board, canvasSnapshot, change, log, resync, snapshot } from "./payloads.mjs";

beforeEach(() => FakeEventSource.reset());
afterEach(closeAll);

/** A SNAPSHOT whose `logs` hold `nodes` of execution `executionId` (changesync's `snapshot = "log"` route). */
const logSnapshot = (executionId, nodes) => ({
  ...canvasSnapshot(board()),
  logs: { flow_logs: { eventType: "LOG_STREAM", executionId, nodes } },
});

describe("state.loaded", () => {
  it("a live stream is not loaded until its SNAPSHOT is applied", async () => {
    const { flow, source } = await live({});
    assert.equal(flow.status, "live");
    assert.equal(flow.state.loaded, false);
    source.emit(canvasSnapshot(board()), "s");
    assert.equal(flow.state.loaded, true);
  });

  it("resuming from a stored position with snapshots off: loaded once the stream opens", async () => {
    const { flow } = await live({ lastEventId: "stored", snapshot: false });
    assert.equal(flow.state.loaded, true);
  });

  it("resuming from a stored position: loaded once the stream opens (no SNAPSHOT is coming)", async () => {
    const { flow } = await live({ lastEventId: "stored" });
    assert.equal(flow.state.loaded, true);
  });

  it("not before the stream opened", async () => {
    const flow = open({ lastEventId: "stored" });
    await flush();
    assert.equal(flow.status, "connecting");
    assert.equal(flow.state.loaded, false);
  });
});

describe("log appends", () => {
  it("20k chunks into one node grow one array in place: no copy per chunk", async () => {
    const { flow, source } = await live({}, canvasSnapshot(board()));
    source.emit(log("c0", "e1", "n0", 0, "x"), "c0");
    const chunks = flow.state.logs.e1.n0;
    let tables = 0;
    let previous = flow.state.logs;
    for (let seq = 1; seq < 20_000; seq++) {
      source.emit(log(`c${seq}`, "e1", "n0", seq, "x"), `c${seq}`);
      if (flow.state.logs !== previous) tables++;
      previous = flow.state.logs;
    }
    const { logs } = flow.state;
    assert.equal(logs.e1.n0, chunks, "the same array, grown: appending copies none of the earlier chunks");
    assert.equal(logs.e1.n0.length, 20_000);
    assert.deepEqual(logs.e1.n0.slice(0, 3).map((chunk) => chunk.seq), [0, 1, 2]);
    assert.equal(tables, 19_999, "logs (and logs[executionId]) are new objects after each append: changes are seen");
    assert.equal(flow.state.logText.e1.n0.text.length, 20_000);
  });

  it("reduce stays pure for an older state: appending to it copies that state's prefix", () => {
    const options = { logEventTypes: ["LOG_STREAM"] };
    const s0 = initialState(FLOW);
    const s1 = reduce(s0, log("a", "e1", "n0", 0, "A"), options);
    const s2 = reduce(s1, log("b", "e1", "n0", 1, "B"), options);
    const fork = reduce(s1, log("c", "e1", "n0", 1, "C"), options);
    assert.deepEqual(fork.logs.e1.n0.map((chunk) => chunk._id), ["a", "c"]);
    assert.deepEqual(s2.logs.e1.n0.map((chunk) => chunk._id), ["a", "b"]);
    assert.equal(fork.logText.e1.n0.text, "AC");
    assert.equal(s2.logText.e1.n0.text, "AB");
    const next = reduce(s2, log("d", "e1", "n0", 2, "D"), options);
    assert.deepEqual(next.logs.e1.n0.map((chunk) => chunk._id), ["a", "b", "d"]);
  });

  it("updates and deletes of a chunk still work on a grown array", async () => {
    const { flow, source } = await live({}, canvasSnapshot(board()));
    for (let seq = 0; seq < 4; seq++) source.emit(log(`c${seq}`, "e1", "n0", seq, `${seq}`), `c${seq}`);
    source.emit(change("LOG_STREAM", "flow_logs", "update", "c1", null, [{ op: "replace", path: "/chunk", value: "one" }]), "u");
    source.emit(change("LOG_STREAM", "flow_logs", "delete", "c2", null), "d");
    source.emit(log("c4", "e1", "n0", 4, "4"), "c4");
    assert.deepEqual(flow.state.logs.e1.n0.map((chunk) => chunk.chunk), ["0", "one", "3", "4"]);
  });
});

describe("pruning", () => {
  it("keeps the logs of the newest keepExecutions executions, by first-seen order", async () => {
    const { flow, source } = await live({ keepExecutions: 2 }, canvasSnapshot(board()));
    source.emit(log("a", "e1", "n0", 0, "1"), "a");
    source.emit(log("b", "e2", "n0", 0, "2"), "b");
    source.emit(log("c", "e1", "n1", 0, "1"), "c"); // e1 again: still the oldest
    source.emit(log("d", "e3", "n0", 0, "3"), "d");
    assert.deepEqual(Object.keys(flow.state.logs).sort(), ["e2", "e3"]);
    assert.deepEqual(Object.keys(flow.state.logText).sort(), ["e2", "e3"]);
    assert.deepEqual(flow.state.logExecutions, ["e2", "e3"]);
  });

  it("keeps 5 by default", async () => {
    const { flow, source } = await live({}, canvasSnapshot(board()));
    for (let run = 1; run <= 7; run++) source.emit(log(`l${run}`, `e${run}`, "n0", 0, "x"), `l${run}`);
    assert.deepEqual(flow.state.logExecutions, ["e3", "e4", "e5", "e6", "e7"]);
    assert.deepEqual(Object.keys(flow.state.logs).sort(), ["e3", "e4", "e5", "e6", "e7"]);
  });
});

describe("logText", () => {
  it("is seeded from the SNAPSHOT's logs and extended by every live chunk", async () => {
    const { flow, source } = await live(
      {},
      logSnapshot("e1", [
        { nodeId: "n0", text: "lo, ", chunks: 2, truncated: true },
        { nodeId: "n1", text: "Other", chunks: 1, truncated: false },
      ]),
    );
    assert.deepEqual(flow.state.logText, {
      e1: { n0: { text: "lo, ", truncated: true }, n1: { text: "Other", truncated: false } },
    });
    assert.deepEqual(flow.state.logs, {}, "the snapshot's chunks are in its text, not in logs");
    assert.equal(flow.state.eventTypes.flow_logs, "LOG_STREAM");
    source.emit(log("l3", "e1", "n0", 2, "world"), "l3");
    source.emit(log("l4", "e1", "n2", 0, "new node"), "l4");
    source.emit({ ...log("l5", "e1", "n0", 3, null) }, "l5"); // not a string: skipped
    assert.deepEqual(flow.state.logText.e1, {
      n0: { text: "lo, world", truncated: true },
      n1: { text: "Other", truncated: false },
      n2: { text: "new node", truncated: false },
    });
    assert.deepEqual(flow.state.logs.e1.n0.map((chunk) => chunk._id), ["l3", "l5"], "logs: the chunks since the snapshot");
  });

  it("logTextField names the chunks' text field", async () => {
    const chunk = (id, text) => change("LOG_STREAM", "flow_logs", "insert", id, { _id: id, executionId: "e1", nodeId: "n0", text });
    const { flow, source } = await live({ logTextField: "text" }, canvasSnapshot(board()));
    source.emit(chunk("a", "Hel"), "a");
    source.emit(chunk("b", "lo"), "b");
    assert.equal(flow.state.logText.e1.n0.text, "Hello");
  });

  it("a SNAPSHOT from an older server (no logs) is fine: the text starts from the live chunks", async () => {
    const { flow, source } = await live({}, snapshot({ flowboards: { eventType: "SYNC_CANVAS", truncated: false, documents: [board()] } }));
    assert.equal(flow.state.loaded, true);
    assert.deepEqual(flow.state.logText, {});
    source.emit(log("l1", "e1", "n0", 0, "Hi"), "l1");
    assert.deepEqual(flow.state.logText, { e1: { n0: { text: "Hi", truncated: false } } });
  });

  it("a SNAPSHOT after a non-resumable RESYNC replaces the text", async () => {
    const { flow, source } = await live({}, logSnapshot("e1", [{ nodeId: "n0", text: "old", chunks: 1, truncated: false }]));
    source.emit(log("l1", "e1", "n0", 1, "+"), "l1");
    source.emit(resync("history-lost", false), "r");
    assert.equal(flow.state.logText.e1.n0.text, "old+", "shown until the SNAPSHOT comes");
    source.emit(logSnapshot("e2", [{ nodeId: "n0", text: "new", chunks: 1, truncated: false }]), "s2");
    assert.deepEqual(flow.state.logText, { e2: { n0: { text: "new", truncated: false } } });
    assert.deepEqual(flow.state.logExecutions, ["e2"]);
  });
});
