// Retry-After parsing and the backoff used when the server names no delay.
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { backoffMs, parseRetryAfterS, sleep } from "../dist/retry.js";

describe("parseRetryAfterS", () => {
  const now = Date.parse("2026-12-03T10:00:00Z");

  for (const [value, expected] of [
    ["1", 1],
    ["0", 0],
    [" 120 ", 120],
    ["Thu, 03 Dec 2026 10:00:05 GMT", 5],
    ["Thu, 03 Dec 2026 09:59:00 GMT", 0],
    ["-1", undefined],
    ["1.5", undefined],
    ["soon", undefined],
    ["2", 2],
    ["", undefined],
    [null, undefined],
    [undefined, undefined],
  ]) {
    it(`${JSON.stringify(value)} → ${expected}`, () => {
      assert.equal(parseRetryAfterS(value, now), expected);
    });
  }
});

describe("backoffMs", () => {
  it("doubles per attempt from the base, within the upper half of each step", () => {
    assert.deepEqual(
      [1, 2, 3].map((attempt) => backoffMs(attempt, 100, 10_000, () => 0)),
      [50, 100, 200],
    );
    assert.deepEqual(
      [1, 2, 3].map((attempt) => backoffMs(attempt, 100, 10_000, () => 1)),
      [100, 200, 400],
    );
  });

  it("never exceeds the cap", () => {
    assert.equal(backoffMs(30, 250, 5_000, () => 1), 5_000);
    assert.equal(backoffMs(30, 250, 5_000, () => 0), 2_500);
  });
});

describe("sleep", () => {
  it("rejects with the signal's reason when it aborts, before the time is up", async () => {
    const controller = new AbortController();
    const started = Date.now();
    const sleeping = sleep(60_000, controller.signal);
    controller.abort(new Error("shutting down"));
    await assert.rejects(sleeping, /shutting down/);
    assert.ok(Date.now() - started < 1_000);
  });

  it("rejects at once on a signal that has already aborted", async () => {
    await assert.rejects(sleep(60_000, AbortSignal.abort(new Error("gone"))), /gone/);
  });
});
