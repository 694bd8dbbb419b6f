// FlowEvents against a fake EventSource: URLs and tokens, reconnection, status, and the flow's state.
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";

import { documentKey, documentsOf } from "../dist/index.js";
import { FakeEventSource } from "./fake-event-source.mjs";
import { closeAll, fakeFetch, live, open } from "./helpers.mjs";
import {
  FLOW,
  board,
  canvas,
  canvasSnapshot,
  change,
  coalesced,
  log,
  node,
  resync,
  skipped,
  snapshot,
  tooLarge,
} from "./payloads.mjs";

/** Lets pending promise callbacks and zero-delay timers run. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

/** Waits (bounded) until `predicate()` holds: reconnection timers are real, but 1–2 ms long here. */
async function until(predicate, what, timeoutMs = 2000) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

beforeEach(() => FakeEventSource.reset());
afterEach(closeAll);

describe("connecting", () => {
  it("builds the URL: base without trailing slash, encoded flow id, types, token", async () => {
    open({ flowId: "team:a/b", types: ["SYNC_CANVAS", "LOG_STREAM"], getToken: () => "t0k" });
    await settle();
    const { url, withCredentials } = FakeEventSource.last;
    assert.equal(url.origin + url.pathname, "https://sync.example.com/flows/team%3Aa%2Fb/events");
    assert.equal(url.searchParams.get("types"), "SYNC_CANVAS,LOG_STREAM");
    assert.equal(url.searchParams.get("access_token"), "t0k");
    assert.equal(url.searchParams.has("lastEventId"), false, "a first connection starts with a SNAPSHOT");
    assert.equal(withCredentials, false);
  });

  it("cookie mode sends no token and passes withCredentials", async () => {
    open({ withCredentials: true, snapshot: false, lastEventId: "stored" });
    const { url, withCredentials } = FakeEventSource.last;
    assert.equal(url.searchParams.has("access_token"), false);
    assert.equal(url.searchParams.get("snapshot"), "false");
    assert.equal(url.searchParams.get("lastEventId"), "stored", "resumes from a stored position");
    assert.equal(withCredentials, true);
  });

  it("status: connecting, then live on open", async () => {
    const statuses = [];
    const flow = open();
    flow.on("status", (status) => statuses.push(status));
    assert.equal(flow.status, "connecting");
    FakeEventSource.last.open();
    assert.equal(flow.status, "live");
    assert.deepEqual(statuses, ["live"]);
  });

  it("listens to every requested type, plus SNAPSHOT and RESYNC", async () => {
    open({ types: ["EXECUTION_UPDATE", "CUSTOM_TYPE"] });
    assert.deepEqual([...FakeEventSource.last.listeners.keys()].sort(), [
      "CUSTOM_TYPE",
      "EXECUTION_UPDATE",
      "RESYNC",
      "SNAPSHOT",
      "error",
      "open",
    ]);
  });

});

describe("reconnecting", () => {
  it("token mode: a fresh token and ?lastEventId= at every reconnection", async () => {
    let issued = 0;
    const { flow, source } = await live({ getToken: async () => `token-${++issued}` }, canvasSnapshot(board()));
    source.emit(canvas("update", board([{ id: "a" }]), [{ op: "add", path: "/nodes/0", value: { id: "a" } }]), "id-7");
    source.fail(FakeEventSource.CONNECTING); // the server ended the stream (restart, token expiry…)
    assert.equal(source.readyState, FakeEventSource.CLOSED, "the browser must not reconnect with the old token");
    assert.equal(flow.status, "connecting");
    await until(() => FakeEventSource.instances.length === 2, "a new EventSource");
    const next = FakeEventSource.last;
    assert.equal(next.url.searchParams.get("access_token"), "token-2");
    assert.equal(next.url.searchParams.get("lastEventId"), "id-7");
    next.open();
    assert.equal(flow.status, "live");
    assert.equal(flow.state.loaded, true, "the state survives the reconnection");
  });

  it("cookie mode: lets the browser reconnect by itself while it does", async () => {
    const { flow, source } = await live({}, canvasSnapshot(board()));
    source.fail(FakeEventSource.CONNECTING);
    assert.equal(flow.status, "connecting");
    await settle();
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(FakeEventSource.instances.length, 1, "no second EventSource while the browser retries");
    source.open(); // the browser's own reconnection, with Last-Event-ID
    assert.equal(flow.status, "live");
  });

  it("cookie mode: a new EventSource with ?lastEventId= when the browser gives up", async () => {
    const { flow, source } = await live({}, canvasSnapshot(board()));
    source.fail(FakeEventSource.CLOSED); // e.g. a 401 or 503 answer
    await until(() => FakeEventSource.instances.length === 2, "a new EventSource");
    assert.equal(FakeEventSource.last.url.searchParams.get("lastEventId"), "id-0");
    assert.equal(flow.state.lastEventId, "id-0");
  });

  it("status error while attempts fail, with backoff; live again once one succeeds", async () => {
    const errors = [];
    const flow = open({ getToken: () => "t" });
    flow.on("error", (error) => errors.push(error.kind));
    await settle();
    FakeEventSource.last.fail(FakeEventSource.CLOSED);
    await until(() => flow.status === "error", "the probe's answer");
    assert.match(flow.state.error.message, /could not connect/);
    await until(() => FakeEventSource.instances.length === 2, "a retry");
    FakeEventSource.last.fail(FakeEventSource.CLOSED);
    await until(() => FakeEventSource.instances.length === 3, "another retry");
    FakeEventSource.last.open();
    assert.equal(flow.status, "live");
    assert.equal(flow.state.error, null);
    assert.deepEqual(errors, ["network", "network"], "the probe got no answer: network failures");
  });

  it("a failing getToken is an error, retried", async () => {
    let calls = 0;
    const flow = open({
      getToken: async () => {
        if (++calls === 1) throw new Error("401 from /auth/changesync-token");
        return "ok";
      },
    });
    await settle();
    assert.equal(flow.status, "error");
    assert.equal(flow.state.error.kind, "token");
    await until(() => FakeEventSource.instances.length === 1, "a connection with the second token");
    assert.equal(FakeEventSource.last.url.searchParams.get("access_token"), "ok");
  });

  it("close() cancels a scheduled reconnection and ignores the old stream", async () => {
    const { flow, source } = await live({ getToken: () => "t" });
    source.fail(FakeEventSource.CONNECTING);
    flow.close();
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(FakeEventSource.instances.length, 1);
    source.emit(canvasSnapshot(board()), "late");
    assert.equal(flow.state.loaded, false);
  });

  it("reconnect() opens a new stream now, from the last id", async () => {
    const { flow } = await live({ getToken: () => "t" }, canvasSnapshot(board()));
    flow.reconnect();
    await settle();
    assert.equal(FakeEventSource.instances.length, 2);
    assert.equal(FakeEventSource.instances[0].readyState, FakeEventSource.CLOSED);
    assert.equal(FakeEventSource.last.url.searchParams.get("lastEventId"), "id-0");
  });
});

describe("state", () => {
  it("SNAPSHOT loads every collection, keyed by _id", async () => {
    const nodes = [{ _id: "n1", flowId: FLOW, label: "one" }, { _id: 7, flowId: FLOW }];
    const { flow } = await live({}, canvasSnapshot(board(), nodes));
    const { state } = flow;
    assert.equal(state.loaded, true);
    assert.deepEqual(state.collections.flowboards[FLOW], board());
    assert.deepEqual(new Set(documentsOf(state, "flow_nodes")), new Set(nodes));
    assert.deepEqual(state.collections.flow_nodes[documentKey(7)], { _id: 7, flowId: FLOW });
    assert.deepEqual(state.eventTypes, { flowboards: "SYNC_CANVAS", flow_nodes: "SYNC_CANVAS", flow_executions: "EXECUTION_UPDATE" });
    assert.equal(state.lastEventId, "id-0");
  });

  it("insert sets, update applies the patch (sharing what did not change), delete removes", async () => {
    const first = { id: "a", position: { x: 0 } };
    const second = { id: "b", position: { x: 5 } };
    const { flow, source } = await live({}, canvasSnapshot(board([first, second])));
    const before = flow.state;
    source.emit(canvas("update", null, [{ op: "replace", path: "/nodes/0/position/x", value: 9 }]), "u1");
    const after = flow.state;
    assert.notEqual(after, before, "a new state object");
    assert.equal(after.collections.flowboards[FLOW].nodes[0].position.x, 9);
    assert.equal(after.collections.flowboards[FLOW].nodes[1], before.collections.flowboards[FLOW].nodes[1]);
    assert.equal(after.collections.flow_nodes, before.collections.flow_nodes, "untouched collections keep identity");
    source.emit(node("insert", "n2", { _id: "n2", flowId: FLOW }), "i1");
    assert.deepEqual(flow.state.collections.flow_nodes.n2, { _id: "n2", flowId: FLOW });
    source.emit(node("delete", "n2", null), "d1");
    assert.equal("n2" in flow.state.collections.flow_nodes, false);
    assert.equal(flow.state.lastEventId, "d1");
  });

  it("an update without patch uses its document; a patch that does not fit falls back to the document", async () => {
    const { flow, source } = await live({}, canvasSnapshot(board()));
    source.emit(canvas("update", board([{ id: "z" }])), "u1");
    assert.deepEqual(flow.state.collections.flowboards[FLOW].nodes, [{ id: "z" }]);
    const misfit = [{ op: "remove", path: "/nodes/5" }];
    source.emit(canvas("update", board([{ id: "y" }]), misfit), "u2");
    assert.deepEqual(flow.state.collections.flowboards[FLOW].nodes, [{ id: "y" }]);
  });

  it("coalesced events set the latest state, or delete", async () => {
    const { flow, source } = await live({}, canvasSnapshot(board(), [{ _id: "n1", v: 1 }]));
    source.emit(coalesced("flow_nodes", "n1", { _id: "n1", v: 4 }, 3), "c1");
    assert.deepEqual(flow.state.collections.flow_nodes.n1, { _id: "n1", v: 4 });
    source.emit(coalesced("flow_nodes", "n1", null, 2), "c2");
    assert.deepEqual(flow.state.collections.flow_nodes, {});
  });

  it("LOG_STREAM chunks are appended per execution and node; skipped chunks are counted", async () => {
    const { flow, source } = await live({}, canvasSnapshot(board()));
    source.emit(log("l1", "e1", "n0", 0, "Hel"), "l1");
    source.emit(log("l2", "e1", "n1", 0, "Other"), "l2");
    source.emit(log("l3", "e1", "n0", 1, "lo"), "l3");
    source.emit(skipped(12), "s1");
    const { logs } = flow.state;
    assert.deepEqual(logs.e1.n0.map((chunk) => chunk.chunk).join(""), "Hello");
    assert.deepEqual(logs.e1.n1.map((chunk) => chunk.seq), [0]);
    assert.equal(flow.state.skippedLogChunks, 12);
    assert.equal(flow.state.collections.flow_logs, undefined, "log chunks are not documents");
    source.emit(change("LOG_STREAM", "flow_logs", "delete", "l2", null), "l4");
    assert.deepEqual(Object.keys(flow.state.logs.e1), ["n0"]);
  });

  it("a resumable RESYNC keeps the state", async () => {
    const { flow, source } = await live({}, canvasSnapshot(board()));
    const before = flow.state;
    source.emit(resync("slow-consumer", true));
    assert.equal(flow.state.collections, before.collections);
    assert.equal(flow.state.loaded, true);
  });

  it("a non-resumable RESYNC keeps the data shown until the SNAPSHOT that follows replaces it", async () => {
    const { flow, source } = await live({}, canvasSnapshot(board(), [{ _id: "old" }]));
    source.emit(log("l1", "e1", "n0", 0, "x"), "l1");
    const before = flow.state;
    const states = [];
    flow.on("state", (state) => states.push(state));
    source.emit(resync("history-lost", false), "r1");
    assert.equal(flow.state.resyncing, true);
    assert.equal(flow.state.loaded, true, "the data shown is still the flow, only possibly behind");
    assert.equal(flow.state.collections, before.collections, "no empty state in between: the canvas does not flash");
    assert.equal(flow.state.logs, before.logs);
    source.emit(canvasSnapshot(board([{ id: "new" }])), "s2");
    assert.equal(flow.state.resyncing, false);
    assert.deepEqual(flow.state.collections.flowboards[FLOW].nodes, [{ id: "new" }]);
    assert.deepEqual(flow.state.collections.flow_nodes, {}, "documents the SNAPSHOT does not hold are gone");
    assert.deepEqual(flow.state.logs, {}, "so are the chunks from before the RESYNC");
    assert.ok(
      states.every((state) => Object.keys(state.collections).length > 0),
      "every state emitted meanwhile shows data",
    );
    assert.equal(flow.status, "live");
  });

  it("with snapshot: false a non-resumable RESYNC clears the data at once (no SNAPSHOT will come)", async () => {
    const { flow, source } = await live({ snapshot: false }, node("insert", "n1", { _id: "n1" }));
    source.emit(resync("history-lost", false), "r1");
    assert.deepEqual(flow.state.collections, {});
    assert.equal(flow.state.resyncing, false);
    assert.equal(flow.state.loaded, false);
  });

  it("a RESYNC of a live stream (no SNAPSHOT after it) reconnects without a position, asking for a SNAPSHOT", async () => {
    const { flow, source } = await live({}, canvasSnapshot(board()));
    source.emit(resync("collection-drop", false), "r1");
    source.emit(node("insert", "n1", { _id: "n1" }), "i1"); // a live event, not the SNAPSHOT
    await settle();
    assert.equal(FakeEventSource.instances.length, 2);
    assert.equal(source.readyState, FakeEventSource.CLOSED);
    const { searchParams } = FakeEventSource.last.url;
    assert.equal(searchParams.has("lastEventId"), false, "a position after a reset would bring no SNAPSHOT");
    assert.equal(searchParams.get("snapshot"), "true");
    assert.equal(flow.state.resyncing, true);
    FakeEventSource.last.open();
    FakeEventSource.last.emit(canvasSnapshot(board([{ id: "fresh" }])), "s2");
    assert.equal(flow.state.resyncing, false);
    assert.deepEqual(flow.state.collections.flowboards[FLOW].nodes, [{ id: "fresh" }]);
  });

  it("a SNAPSHOT keeps collections it does not list (logs)", async () => {
    const { flow, source } = await live({}, log("l1", "e1", "n0", 0, "x"));
    source.emit(snapshot({ flowboards: { eventType: "SYNC_CANVAS", truncated: true, documents: [board()] } }), "s");
    assert.equal(flow.state.logs.e1.n0.length, 1);
    assert.deepEqual(flow.state.truncated, { flowboards: true });
  });
});

describe("documents the stream could not carry", () => {
  it("without refetch: listed in state.stale until a later event brings a document", async () => {
    const { flow, source } = await live({}, canvasSnapshot(board(), [{ _id: "n1", v: 1 }]));
    source.emit(tooLarge("flow_nodes", "update", "n1"), "t1");
    assert.deepEqual(flow.state.stale, { flow_nodes: ["n1"] });
    assert.deepEqual(flow.state.collections.flow_nodes.n1, { _id: "n1", v: 1 }, "the old copy stays, marked stale");
    source.emit(node("update", "n1", { _id: "n1", v: 3 }, [{ op: "replace", path: "/v", value: 3 }]), "u1");
    assert.deepEqual(flow.state.stale, {});
    assert.deepEqual(flow.state.collections.flow_nodes.n1, { _id: "n1", v: 3 }, "a stale copy is not patched");
  });

  it("with refetch: the fetched document replaces the copy", async () => {
    const requests = [];
    const { flow, source } = await live(
      { refetch: async (request) => (requests.push(request), { _id: request.documentId, v: "fetched" }) },
      canvasSnapshot(board(), [{ _id: "n1", v: 1 }]),
    );
    source.emit(tooLarge("flow_nodes", "update", "n1"), "t1");
    await settle();
    assert.equal(requests.length, 1);
    assert.deepEqual(
      { collection: requests[0].collection, documentId: requests[0].documentId, type: requests[0].type, flowId: requests[0].flowId },
      { collection: "flow_nodes", documentId: "n1", type: "SYNC_CANVAS", flowId: FLOW },
    );
    assert.deepEqual(flow.state.collections.flow_nodes.n1, { _id: "n1", v: "fetched" });
    assert.deepEqual(flow.state.stale, {});
  });

  it("a refetch that returns null deletes; one overtaken by a later event is dropped", async () => {
    let release;
    const gate = new Promise((resolve) => (release = resolve));
    const { flow, source } = await live(
      { refetch: async (request) => (request.documentId === "n1" ? null : (await gate, { _id: "n2", v: "old" })) },
      canvasSnapshot(board(), [{ _id: "n1" }, { _id: "n2", v: 1 }]),
    );
    source.emit(tooLarge("flow_nodes", "replace", "n1"), "t1");
    source.emit(tooLarge("flow_nodes", "replace", "n2"), "t2");
    await settle();
    assert.equal("n1" in flow.state.collections.flow_nodes, false);
    source.emit(node("replace", "n2", { _id: "n2", v: "newer" }), "r1");
    release();
    await settle();
    assert.deepEqual(flow.state.collections.flow_nodes.n2, { _id: "n2", v: "newer" });
  });

  it("only the latest refetch of a document applies, and none across a SNAPSHOT", async () => {
    const gates = [];
    const { flow, source } = await live(
      {
        refetch: (request) =>
          new Promise((resolve) => gates.push(() => resolve({ _id: request.documentId, v: `fetch-${gates.length}` }))),
      },
      canvasSnapshot(board(), [{ _id: "n1", v: 0 }, { _id: "n2", v: 0 }]),
    );
    source.emit(tooLarge("flow_nodes", "replace", "n1"), "t1");
    source.emit(tooLarge("flow_nodes", "replace", "n1"), "t2");
    assert.equal(gates.length, 2);
    gates[1](); // the second answer first, then the first (older) one
    await settle();
    gates[0]();
    await settle();
    assert.deepEqual(flow.state.collections.flow_nodes.n1, { _id: "n1", v: "fetch-2" });
    source.emit(tooLarge("flow_nodes", "replace", "n2"), "t3");
    source.emit(canvasSnapshot(board(), [{ _id: "n2", v: "snapshot" }]), "s2");
    gates[2]();
    await settle();
    assert.deepEqual(flow.state.collections.flow_nodes.n2, { _id: "n2", v: "snapshot" });
  });

  it("an update with neither patch nor document is refetched too; a failing refetch is reported", async () => {
    const errors = [];
    const { flow, source } = await live(
      {
        refetch: async () => {
          throw new Error("404");
        },
      },
      canvasSnapshot(board()),
    );
    flow.on("error", (error) => errors.push(error.kind));
    source.emit(canvas("update", null), "u1");
    await settle();
    assert.deepEqual(errors, ["refetch"]);
    assert.deepEqual(flow.state.stale, { flowboards: [FLOW] });
    assert.equal(flow.status, "live", "a refetch failure is not a connection failure");
  });
});

describe("delivery to the application", () => {
  it("typed callbacks per event type, then the state", async () => {
    const { flow, source } = await live({});
    const calls = [];
    flow.on("SNAPSHOT", (payload) => calls.push(["SNAPSHOT", Object.keys(payload.collections).length]));
    flow.on("SYNC_CANVAS", (payload) => calls.push(["SYNC_CANVAS", payload.operation, flow.state.collections.flow_nodes.n1 !== undefined]));
    const stop = flow.on("state", (state) => calls.push(["state", state.lastEventId]));
    source.emit(canvasSnapshot(board()), "a");
    source.emit(node("insert", "n1", { _id: "n1" }), "b");
    stop();
    source.emit(node("delete", "n1", null), "c");
    assert.deepEqual(calls, [
      ["SNAPSHOT", 3],
      ["state", "a"],
      ["SYNC_CANVAS", "insert", true],
      ["state", "b"],
      ["SYNC_CANVAS", "delete", false],
    ]);
  });

  it("a throwing listener neither stops the others nor the state", async () => {
    const reported = [];
    const saved = globalThis.reportError;
    globalThis.reportError = (error) => reported.push(error.message);
    try {
      const { flow, source } = await live({});
      const calls = [];
      flow.on("SNAPSHOT", () => {
        throw new Error("boom");
      });
      flow.on("SNAPSHOT", () => calls.push("second"));
      source.emit(canvasSnapshot(board()), "a");
      assert.deepEqual(calls, ["second"]);
      assert.deepEqual(reported, ["boom"]);
      assert.equal(flow.state.loaded, true);
    } finally {
      globalThis.reportError = saved;
    }
  });

  it("a malformed message is reported and skipped", async () => {
    const { flow, source } = await live({});
    const errors = [];
    flow.on("error", (error) => errors.push(error.kind));
    source.dispatch("SYNC_CANVAS", { data: "{not json", lastEventId: "x" });
    assert.deepEqual(errors, ["parse"]);
    assert.equal(flow.state.lastEventId, null, "the position does not move past a message we could not read");
  });

  it("async iteration yields every payload in order and ends on close()", async () => {
    const { flow, source } = await live({});
    const received = [];
    const reading = (async () => {
      for await (const payload of flow) received.push(payload.type === "SNAPSHOT" ? "SNAPSHOT" : payload.operation);
    })();
    await settle();
    source.emit(canvasSnapshot(board()), "a");
    source.emit(node("insert", "n1", { _id: "n1" }), "b");
    source.emit(node("delete", "n1", null), "c");
    await settle();
    flow.close();
    await reading;
    assert.deepEqual(received, ["SNAPSHOT", "insert", "delete"]);
  });

  it("breaking out of a for-await loop detaches that iterator", async () => {
    const { flow, source } = await live({});
    const reading = (async () => {
      for await (const payload of flow) return payload.type;
    })();
    await settle();
    source.emit(canvasSnapshot(board()), "a");
    assert.equal(await reading, "SNAPSHOT");
    source.emit(node("insert", "n1", { _id: "n1" }), "b");
    assert.equal(flow.state.collections.flow_nodes.n1._id, "n1");
  });
});
