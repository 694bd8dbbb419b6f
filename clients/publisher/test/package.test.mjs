// The built package: its exports at run time, and its declarations as a TypeScript consumer sees them.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { it } from "node:test";

const TSC = fileURLToPath(new URL("../node_modules/.bin/tsc", import.meta.url));
const CONSUMER = fileURLToPath(new URL("./types/tsconfig.json", import.meta.url));

it("the built package exports the publisher, its error and the flow id pattern", async () => {
  const module = await import("../dist/index.js");
  for (const name of ["Publisher", "PublishError"]) assert.equal(typeof module[name], "function", name);
  assert.ok(module.FLOW_ID_PATTERN instanceof RegExp);
  assert.deepEqual([...module.DEFAULT_EVENT_TYPES], ["SYNC_CANVAS", "EXECUTION_UPDATE", "LOG_STREAM"]);
  assert.deepEqual([...module.RETRYABLE_STATUSES], [429, 503]);
});

it("the declarations type a consumer's calls and reject its mistakes (test/types/consumer.ts)", async () => {
  try {
    await promisify(execFile)(TSC, ["-p", CONSUMER]);
  } catch (error) {
    assert.fail(`tsc found errors in test/types/consumer.ts:\n${error.stdout}${error.stderr}`);
  }
});
