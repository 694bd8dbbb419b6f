// Publisher against a scripted fetch: requests, answers, errors, retries and their bounds.
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { FLOW_ID_PATTERN, PublishError, Publisher } from "../dist/index.js";
import { HANG, accepted, fakeFetch, json } from "./fake-fetch.mjs";

const BASE = "http://changesync.test:8000";
const FLOW = "flow-1";
const CHUNK = { executionId: "run-1", nodeId: "n1", seq: 0, chunk: "Hello " };

/** A publisher with waits of a few milliseconds, so retries are quick. */
const publisher = (fetch, options = {}) =>
  new Publisher({ baseUrl: BASE, token: "t0k3n", retryDelayMs: 1, maxRetryDelayMs: 50, fetch, ...options });

/** The PublishError that `promise` rejects with. */
async function refusal(promise) {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof PublishError, `not a PublishError: ${error}`);
    return error;
  }
  assert.fail("the call did not reject");
}

describe("options", () => {
  for (const [name, options, message] of [
    ["a relative baseUrl", { baseUrl: "/sync" }, /baseUrl must be an absolute http\(s\) URL, got "\/sync"/],
    ["a baseUrl that is not http", { baseUrl: "ftp://x" }, /baseUrl must be an absolute http\(s\) URL/],
    ["token and getToken", { baseUrl: BASE, token: "a", getToken: () => "b" }, /pass token or getToken, not both/],
    ["an empty token", { baseUrl: BASE, token: "" }, /token must be a non-empty string/],
    ["timeoutMs 0", { baseUrl: BASE, timeoutMs: 0 }, /timeoutMs must be a number > 0, got 0/],
    ["fractional retries", { baseUrl: BASE, retries: 1.5 }, /retries must be an integer >= 0, got 1.5/],
    ["negative retries", { baseUrl: BASE, retries: -1 }, /retries must be an integer >= 0, got -1/],
    ["a negative retryDelayMs", { baseUrl: BASE, retryDelayMs: -5 }, /retryDelayMs must be a number >= 0, got -5/],
  ]) {
    it(`refuses ${name}, naming the value`, () => {
      assert.throws(() => new Publisher({ fetch: fakeFetch(), ...options }), message);
    });
  }

  it("keeps the base URL's path prefix and drops its trailing slashes", async () => {
    const fetch = fakeFetch(accepted());
    await publisher(fetch, { baseUrl: "https://sync.example.com/changesync//" }).logChunk(FLOW, CHUNK);
    assert.equal(fetch.calls[0].url, "https://sync.example.com/changesync/flows/flow-1/events");
  });
});

describe("publish", () => {
  it("POSTs {type, data} as JSON with the bearer token and resolves with the event's id", async () => {
    const fetch = fakeFetch(accepted("1795715181-1-0"));
    const published = await publisher(fetch).publish(FLOW, "LOG_STREAM", CHUNK);
    assert.deepEqual(published, { id: "1795715181-1-0", type: "LOG_STREAM", flowId: FLOW });
    const [call] = fetch.calls;
    assert.equal(call.url, `${BASE}/flows/flow-1/events`);
    assert.equal(call.method, "POST");
    assert.equal(call.headers["Content-Type"], "application/json");
    assert.equal(call.headers["Authorization"], "Bearer t0k3n");
    assert.deepEqual(call.body, { type: "LOG_STREAM", data: CHUNK });
  });

  it("logChunk publishes a LOG_STREAM event", async () => {
    const fetch = fakeFetch(accepted());
    await publisher(fetch).logChunk(FLOW, CHUNK);
    assert.deepEqual(fetch.calls[0].body, { type: "LOG_STREAM", data: CHUNK });
  });

  it("names the collection when asked (several routes share SYNC_CANVAS)", async () => {
    const fetch = fakeFetch(accepted("1-0", FLOW, "SYNC_CANVAS"));
    await publisher(fetch).publish(FLOW, "SYNC_CANVAS", { kind: "note" }, { collection: "flow_nodes" });
    assert.deepEqual(fetch.calls[0].body, { type: "SYNC_CANVAS", data: { kind: "note" }, collection: "flow_nodes" });
  });

  it("sends no Authorization header without a token (a service with auth off)", async () => {
    const fetch = fakeFetch(accepted());
    await new Publisher({ baseUrl: BASE, fetch }).logChunk(FLOW, CHUNK);
    assert.equal(fetch.calls[0].headers["Authorization"], undefined);
  });

  it("asks getToken before every attempt, so a retry carries a fresh token", async () => {
    let minted = 0;
    const getToken = async () => `token-${++minted}`;
    const fetch = fakeFetch(json(503, { error: "hub unavailable" }), accepted());
    await publisher(fetch, { token: undefined, getToken }).logChunk(FLOW, CHUNK);
    assert.deepEqual(
      fetch.calls.map((call) => call.headers["Authorization"]),
      ["Bearer token-1", "Bearer token-2"],
    );
  });

  it("checks flow ids as the server does, before any request", async () => {
    const fetch = fakeFetch();
    for (const flowId of ["", "a/b", "a b", "ünï", "x".repeat(257), "flow?x=1", undefined]) {
      await assert.rejects(publisher(fetch).logChunk(flowId, CHUNK), TypeError, JSON.stringify(flowId));
    }
    assert.equal(fetch.calls.length, 0);
    for (const flowId of ["a", "x".repeat(256), "A-z_0.9:~-", "6b0870687146b9e05cab72c6"]) {
      assert.ok(FLOW_ID_PATTERN.test(flowId), flowId);
    }
  });

  it("refuses a type or data the server would refuse, before any request", async () => {
    const fetch = fakeFetch();
    await assert.rejects(publisher(fetch).publish(FLOW, "", CHUNK), /type must be a route's event type, got ""/);
    await assert.rejects(publisher(fetch).publish(FLOW, "LOG_STREAM", [1, 2]), /data must be a JSON object, got an array/);
    await assert.rejects(publisher(fetch).publish(FLOW, "LOG_STREAM", null), /data must be a JSON object, got null/);
    assert.equal(fetch.calls.length, 0);
  });
});

describe("errors", () => {
  for (const [status, body, headers] of [
    [400, { error: "unknown-type", detail: "type must be one of: LOG_STREAM" }, {}],
    [401, { error: "unauthorized", detail: "no token" }, { "WWW-Authenticate": "Bearer" }],
    [403, { error: "forbidden", detail: "publishing needs a token with the role 'changesync-publisher'" }, {}],
    [405, { error: "Method Not Allowed", detail: "publishing is off: list the event types in publish.event_types" }, {}],
    [413, { error: "too-large", detail: "larger than limits.max_event_bytes (65536)" }, {}],
    [422, { error: "dropped", detail: "the route's rules drop it: private" }, {}],
  ]) {
    it(`${status} ${body.error} is a PublishError with the answer's fields, not retried`, async () => {
      const fetch = fakeFetch(json(status, body, headers));
      const error = await refusal(publisher(fetch).logChunk(FLOW, CHUNK));
      assert.equal(error.status, status);
      assert.equal(error.error, body.error);
      assert.equal(error.detail, body.detail);
      assert.equal(error.retryAfterS, undefined);
      assert.equal(error.attempts, 1);
      assert.equal(error.retryable, false);
      assert.deepEqual(error.body, body);
      assert.equal(error.name, "PublishError");
      assert.match(error.message, new RegExp(`refused the event after 1 attempt: ${status} ${body.error}`));
      assert.equal(fetch.calls.length, 1);
    });
  }

  it("keeps an error answer's other fields in body (413 limit_bytes)", async () => {
    const body = { error: "request body too large", limit_bytes: 65_536 };
    const error = await refusal(publisher(fakeFetch(json(413, body))).logChunk(FLOW, CHUNK));
    assert.equal(error.detail, undefined);
    assert.equal(error.body.limit_bytes, 65_536);
  });

  it("reports an answer that is not changesync's JSON by its status, with the start of its text", async () => {
    const page = new Response("<html>Bad Gateway</html>", { status: 502, headers: { "Content-Type": "text/html" } });
    const error = await refusal(publisher(fakeFetch(page)).logChunk(FLOW, CHUNK));
    assert.equal(error.status, 502);
    assert.equal(error.error, "HTTP 502");
    assert.equal(error.detail, "<html>Bad Gateway</html>");
    assert.equal(error.body, undefined);
  });

  it("does not retry a 2xx answer without an event id: the event may have been published", async () => {
    const fetch = fakeFetch(json(202, { ok: true }));
    const error = await refusal(publisher(fetch).logChunk(FLOW, CHUNK));
    assert.equal(error.status, 202);
    assert.equal(error.error, "unexpected-answer");
    assert.equal(fetch.calls.length, 1);
  });
});

describe("retries", () => {
  const tooFast = (retryAfter = "0") => json(429, { error: "too many events", detail: "at most 200/s" }, { "Retry-After": retryAfter });
  const unavailable = () => json(503, { error: "hub unavailable", detail: "redis down" }, { "Retry-After": "0" });

  it("retries a 429 and a 503, then resolves", async () => {
    const fetch = fakeFetch(tooFast(), unavailable(), accepted("7-0"));
    assert.equal((await publisher(fetch).logChunk(FLOW, CHUNK)).id, "7-0");
    assert.equal(fetch.calls.length, 3);
    assert.deepEqual(fetch.calls[2].body, fetch.calls[0].body, "a retry sends the same event");
  });

  it("gives up after `retries` further attempts with the last answer", async () => {
    const fetch = fakeFetch(unavailable(), unavailable(), tooFast("0"));
    const error = await refusal(publisher(fetch, { retries: 2 }).logChunk(FLOW, CHUNK));
    assert.equal(error.status, 429);
    assert.equal(error.retryAfterS, 0);
    assert.equal(error.attempts, 3);
    assert.equal(error.retryable, true);
    assert.match(error.message, /after 3 attempts: 429 too many events \(at most 200\/s\)/);
    assert.equal(fetch.calls.length, 3);
  });

  it("makes one attempt with retries: 0", async () => {
    const fetch = fakeFetch(tooFast("1"));
    const error = await refusal(publisher(fetch, { retries: 0 }).logChunk(FLOW, CHUNK));
    assert.equal(error.retryAfterS, 1);
    assert.equal(error.attempts, 1);
  });

  it("waits as long as Retry-After says", async () => {
    const fetch = fakeFetch(tooFast("1"), accepted());
    const started = performance.now();
    await publisher(fetch, { maxRetryDelayMs: 2_000 }).logChunk(FLOW, CHUNK);
    assert.ok(performance.now() - started >= 990, `retried after ${performance.now() - started} ms`);
  });

  it("throws at once when Retry-After is longer than maxRetryDelayMs", async () => {
    const fetch = fakeFetch(tooFast("30"), accepted());
    const error = await refusal(publisher(fetch, { maxRetryDelayMs: 5_000 }).logChunk(FLOW, CHUNK));
    assert.equal(error.retryAfterS, 30);
    assert.equal(fetch.calls.length, 1);
  });

  it("retries a 503 without Retry-After after a backoff", async () => {
    const fetch = fakeFetch(json(503, { error: "hub unavailable" }), accepted());
    await publisher(fetch).logChunk(FLOW, CHUNK);
    assert.equal(fetch.calls.length, 2);
  });

  it("retries a network failure, and reports it when the retries run out", async () => {
    const refused = new TypeError("fetch failed", { cause: new Error("connect ECONNREFUSED 127.0.0.1:8000") });
    const recovered = fakeFetch(refused, accepted("9-0"));
    assert.equal((await publisher(recovered).logChunk(FLOW, CHUNK)).id, "9-0");

    const down = fakeFetch(refused, refused);
    const error = await refusal(publisher(down, { retries: 1 }).logChunk(FLOW, CHUNK));
    assert.equal(error.status, undefined);
    assert.equal(error.error, "network");
    assert.equal(error.cause, refused);
    assert.equal(error.attempts, 2);
    assert.match(error.message, /no answer from changesync after 2 attempts \(network: TypeError: fetch failed\)/);
  });

  it("ends an attempt after timeoutMs and retries it", async () => {
    const fetch = fakeFetch(HANG, HANG);
    const error = await refusal(publisher(fetch, { timeoutMs: 20, retries: 1 }).logChunk(FLOW, CHUNK));
    assert.equal(error.error, "timeout");
    assert.equal(error.detail, "no answer within 20 ms");
    assert.equal(error.attempts, 2);
    assert.equal(fetch.calls.length, 2);
  });

  it("stops at the caller's abort, during a request or a wait, with the signal's reason", async () => {
    const started = performance.now();
    const duringRequest = new AbortController();
    const hanging = publisher(fakeFetch(HANG), { timeoutMs: 60_000 }).logChunk(FLOW, CHUNK, {
      signal: duringRequest.signal,
    });
    setTimeout(() => duringRequest.abort(new Error("run cancelled")), 10);
    await assert.rejects(hanging, /run cancelled/);

    const whileTokenComes = new AbortController();
    const slowToken = () => new Promise((resolve) => setTimeout(() => resolve("late"), 20));
    const tokenFetch = fakeFetch(HANG);
    const options = { token: undefined, getToken: slowToken, timeoutMs: 60_000 };
    const early = publisher(tokenFetch, options).logChunk(FLOW, CHUNK, { signal: whileTokenComes.signal });
    whileTokenComes.abort(new Error("cancelled before the request"));
    await assert.rejects(early, /cancelled before the request/);
    assert.equal(tokenFetch.calls.length, 0);
    assert.ok(performance.now() - started < 1_000, "the aborts waited for the timeout");

    const duringWait = new AbortController();
    const fetch = fakeFetch(tooFast("1"), accepted());
    const waiting = publisher(fetch, { maxRetryDelayMs: 5_000 }).logChunk(FLOW, CHUNK, { signal: duringWait.signal });
    setTimeout(() => duringWait.abort(new Error("shutting down")), 10);
    await assert.rejects(waiting, /shutting down/);
    assert.equal(fetch.calls.length, 1, "no attempt after the abort");

    const already = fakeFetch(accepted());
    const signal = AbortSignal.abort(new Error("too late"));
    await assert.rejects(publisher(already).logChunk(FLOW, CHUNK, { signal }), /too late/);
    assert.equal(already.calls.length, 0);
  });
});
