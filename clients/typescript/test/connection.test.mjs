// The connection: server-side rendering, start(), custom event types, refused connections (the
// status probe), the token timeout, and a backoff that grows while connections do not last.
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";

import { FlowEvents } from "../dist/index.js";
import { FakeEventSource } from "./fake-event-source.mjs";
import { closeAll, fakeFetch, flush, live, open, record } from "./helpers.mjs";
import { FLOW, canvasSnapshot, board, change } from "./payloads.mjs";

beforeEach(() => FakeEventSource.reset());
afterEach(closeAll);

describe("server-side rendering and start()", () => {
  it("without an EventSource: no throw, status idle, not loaded; start() does nothing", () => {
    assert.equal(globalThis.EventSource, undefined, "Node has no EventSource, as on a server");
    const flow = new FlowEvents({ baseUrl: "", flowId: FLOW });
    assert.equal(flow.status, "idle");
    assert.equal(flow.state.loaded, false);
    flow.start();
    flow.reconnect();
    assert.equal(flow.status, "idle");
    flow.close();
  });

  it("connect: false waits for start(), which opens the stream once", async () => {
    const flow = open({ connect: false });
    await flush();
    assert.equal(FakeEventSource.instances.length, 0);
    assert.equal(flow.status, "idle");
    flow.start();
    flow.start();
    await flush();
    assert.equal(FakeEventSource.instances.length, 1);
    assert.equal(flow.status, "connecting");
    FakeEventSource.last.open();
    flow.start();
    await flush();
    assert.equal(FakeEventSource.instances.length, 1, "start() is idempotent");
    assert.equal(flow.status, "live");
  });

  it("start() after close() does nothing", async () => {
    const flow = open({ connect: false });
    flow.close();
    flow.start();
    await flush();
    assert.equal(FakeEventSource.instances.length, 0);
    assert.equal(flow.status, "closed");
  });
});

describe("event types of the application's own routes", () => {
  const widget = (id) => change("WIDGET_UPDATE", "widgets", "insert", id, { _id: id, flowId: FLOW });

  it("a type given to on() is listened to on the open stream, and its documents are kept", async () => {
    const { flow, source } = await live({}, canvasSnapshot(board()));
    assert.equal(source.listeners.has("WIDGET_UPDATE"), false);
    source.emit(widget("w0"), "w0");
    assert.equal(flow.state.collections.widgets, undefined, "no listener yet: the EventSource has no wildcard");
    const seen = record(flow, "WIDGET_UPDATE");
    flow.on("WIDGET_UPDATE", () => {}); // a second listener adds no second registration
    assert.equal(source.listeners.get("WIDGET_UPDATE").length, 1);
    source.emit(widget("w1"), "w1");
    assert.deepEqual(seen.map((payload) => payload.documentId), ["w1"]);
    assert.deepEqual(flow.state.collections.widgets.w1, { _id: "w1", flowId: FLOW });
    assert.equal(flow.state.eventTypes.widgets, "WIDGET_UPDATE");
  });

  it("and on every later stream; types listed in options.types are listened to from the start", async () => {
    const { flow, source } = await live({ getToken: () => "t" });
    flow.on("WIDGET_UPDATE", () => {});
    flow.reconnect();
    await flush();
    assert.notEqual(FakeEventSource.last, source);
    assert.equal(FakeEventSource.last.listeners.get("WIDGET_UPDATE").length, 1);
    const listed = open({ types: ["SYNC_CANVAS", "WIDGET_UPDATE"] });
    await flush();
    FakeEventSource.last.open();
    FakeEventSource.last.emit(widget("w2"), "w2");
    assert.deepEqual(listed.state.collections.widgets.w2, { _id: "w2", flowId: FLOW });
  });

  it("the client's own event names (state, status, error, canvas) are never stream types", async () => {
    const { flow, source } = await live({});
    for (const name of ["state", "status", "error", "canvas"]) flow.on(name, () => {});
    assert.equal(source.listeners.get("error").length, 1, "only the connection's own error listener");
    assert.equal(source.listeners.has("state"), false);
  });
});

describe("refused connections: the probe reads the status", () => {
  it("the probe fetches the stream's own URL, with its credentials, and drops the body at once", async () => {
    const fetch = fakeFetch(503);
    open({ fetch, withCredentials: true, getToken: () => "t0k" });
    await flush();
    const source = FakeEventSource.last;
    source.fail(FakeEventSource.CLOSED);
    await flush();
    assert.equal(fetch.calls.length, 1);
    const [{ url, init }] = fetch.calls;
    assert.equal(url.href, source.url.href);
    assert.equal(url.searchParams.get("access_token"), "t0k");
    assert.equal(init.credentials, "include");
    assert.equal(init.signal.aborted, true, "the request is aborted once the status is read");
  });

  for (const [status, kind] of [[403, "forbidden"], [404, "not-found"]]) {
    it(`${status} is ${kind}: terminal, status closed, no more attempts`, async (t) => {
      t.mock.timers.enable({ apis: ["setTimeout"] });
      const flow = open({ fetch: fakeFetch(status), getToken: () => "t" });
      const errors = record(flow, "error");
      await flush();
      FakeEventSource.last.fail(FakeEventSource.CLOSED);
      await flush();
      assert.equal(flow.status, "closed");
      assert.deepEqual(errors.map((error) => [error.kind, error.status, error.terminal]), [[kind, status, true]]);
      assert.equal(flow.state.error, errors[0]);
      t.mock.timers.tick(120_000);
      await flush();
      assert.equal(FakeEventSource.instances.length, 1, "never retried");
    });
  }

  it("a terminal error ends a waiting for-await loop by throwing it, after what was buffered", async () => {
    const flow = open({ fetch: fakeFetch(403), getToken: () => "t" });
    const received = [];
    const reading = (async () => {
      for await (const payload of flow) received.push(payload.type);
    })();
    await flush();
    FakeEventSource.last.fail(FakeEventSource.CLOSED);
    await assert.rejects(reading, (error) => error.kind === "forbidden" && error.terminal);
    assert.deepEqual(received, []);
    assert.equal(flow.status, "closed");
  });

  it("401: once more at once with a fresh token; a second 401 is unauthorized, terminal", async () => {
    let tokens = 0;
    const fetch = fakeFetch(401);
    const flow = open({ fetch, getToken: () => `token-${++tokens}` });
    const errors = record(flow, "error");
    await flush();
    FakeEventSource.last.fail(FakeEventSource.CLOSED);
    await flush();
    assert.equal(FakeEventSource.instances.length, 2, "retried without waiting");
    assert.equal(FakeEventSource.last.url.searchParams.get("access_token"), "token-2");
    assert.deepEqual(errors, [], "an expired token is no error yet");
    FakeEventSource.last.fail(FakeEventSource.CLOSED);
    await flush();
    assert.equal(flow.status, "closed");
    assert.deepEqual(errors.map((error) => [error.kind, error.status]), [["unauthorized", 401]]);
    assert.equal(tokens, 2);
  });

  it("the 401 allowance starts over once a connection opens", async () => {
    const flow = open({ fetch: fakeFetch(401), getToken: () => "t" });
    await flush();
    FakeEventSource.last.fail(FakeEventSource.CLOSED);
    await flush();
    FakeEventSource.last.open();
    FakeEventSource.last.fail(FakeEventSource.CLOSED); // dropped; the next attempt is refused
    await new Promise((resolve) => setTimeout(resolve, 20));
    await flush();
    assert.equal(FakeEventSource.instances.length, 3);
    FakeEventSource.last.fail(FakeEventSource.CLOSED);
    await flush();
    assert.equal(FakeEventSource.instances.length, 4, "one more try after a 401, as at the start");
    assert.notEqual(flow.status, "closed");
  });

  it("5xx and 429 are server errors, no answer is a network error: both retried", async () => {
    const flow = open({ fetch: fakeFetch(503, 429, null, 502), getToken: () => "t" });
    const errors = record(flow, "error");
    for (let attempt = 1; attempt <= 4; attempt++) {
      await waitFor(() => FakeEventSource.instances.length === attempt);
      FakeEventSource.last.fail(FakeEventSource.CLOSED);
      await waitFor(() => errors.length === attempt);
      assert.equal(flow.status, "error");
    }
    assert.deepEqual(errors.map((error) => [error.kind, error.status]), [
      ["server", 503],
      ["server", 429],
      ["network", undefined],
      ["server", 502],
    ]);
    await waitFor(() => FakeEventSource.instances.length === 5);
  });

  it("reconnect() after a terminal error starts again", async () => {
    const flow = open({ fetch: fakeFetch(403), getToken: () => "t" });
    await flush();
    FakeEventSource.last.fail(FakeEventSource.CLOSED);
    await flush();
    assert.equal(flow.status, "closed");
    flow.reconnect();
    await flush();
    assert.equal(FakeEventSource.instances.length, 2);
    FakeEventSource.last.open();
    assert.equal(flow.status, "live");
    assert.equal(flow.state.error, null);
  });

  it("a stream that drops after it opened is not probed", async () => {
    const fetch = fakeFetch(403);
    const { source } = await live({ fetch, getToken: () => "t" });
    source.fail(FakeEventSource.CONNECTING);
    await flush();
    assert.equal(fetch.calls.length, 0);
  });
});

describe("the token", () => {
  it("a getToken that does not answer in tokenTimeoutMs is a token error, retried with backoff", async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    let calls = 0;
    const flow = open({ getToken: () => (++calls, new Promise(() => {})), tokenTimeoutMs: 5000, reconnectDelayMs: 1000 });
    const errors = record(flow, "error");
    await flush();
    t.mock.timers.tick(4999);
    await flush();
    assert.deepEqual(errors, []);
    t.mock.timers.tick(1);
    await flush();
    assert.deepEqual(errors.map((error) => error.kind), ["token"]);
    assert.match(errors[0].message, /5000 ms/);
    assert.equal(flow.status, "error");
    t.mock.timers.tick(1000);
    await flush();
    assert.equal(calls, 2, "asked again after the backoff");
  });

  it("tokenTimeoutMs must be positive", () => {
    assert.throws(() => open({ tokenTimeoutMs: 0 }), /tokenTimeoutMs must be > 0, got 0/);
  });
});

describe("backoff", () => {
  /** Opens the current stream, lets the server drop it at once, and returns how long the next attempt took. */
  async function acceptThenDrop(t, maxWaitMs) {
    const source = FakeEventSource.last;
    source.open();
    source.fail(FakeEventSource.CONNECTING);
    const count = FakeEventSource.instances.length;
    for (let waited = 0; waited <= maxWaitMs; waited += 50) {
      await flush();
      if (FakeEventSource.instances.length > count) return waited;
      t.mock.timers.tick(50);
    }
    throw new Error(`no new connection within ${maxWaitMs} ms`);
  }

  it("grows while the server accepts and drops connections, and starts over after a healthy one", async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    open({ getToken: () => "t", reconnectDelayMs: 1000, maxReconnectDelayMs: 16_000 });
    await flush();
    const waits = [];
    for (let drop = 0; drop < 6; drop++) waits.push(await acceptThenDrop(t, 20_000));
    // Each wait is between half and all of 1, 2, 4, 8, 16, 16 s (equal jitter).
    const ceilings = [1000, 2000, 4000, 8000, 16_000, 16_000];
    waits.forEach((wait, i) => {
      assert.ok(wait >= ceilings[i] / 2 - 50 && wait <= ceilings[i], `drop ${i + 1}: waited ${wait} ms (${waits})`);
    });
    // A connection that delivers its SNAPSHOT is healthy: the next drop waits the base delay again.
    const source = FakeEventSource.last;
    source.open();
    source.emit(canvasSnapshot(board()), "s");
    source.fail(FakeEventSource.CONNECTING);
    const count = FakeEventSource.instances.length;
    t.mock.timers.tick(1000);
    await flush();
    assert.equal(FakeEventSource.instances.length, count + 1, "back to the base delay");
  });

  it("a connection open for 10 s is healthy too", async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    open({ getToken: () => "t", reconnectDelayMs: 1000, maxReconnectDelayMs: 16_000 });
    await flush();
    for (let drop = 0; drop < 4; drop++) await acceptThenDrop(t, 20_000);
    const source = FakeEventSource.last;
    source.open();
    t.mock.timers.tick(10_000);
    source.fail(FakeEventSource.CONNECTING);
    const count = FakeEventSource.instances.length;
    t.mock.timers.tick(1000);
    await flush();
    assert.equal(FakeEventSource.instances.length, count + 1, "back to the base delay");
  });
});

/** Waits (bounded, real timers) until `predicate()` holds. */
async function waitFor(predicate, timeoutMs = 2000) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}
