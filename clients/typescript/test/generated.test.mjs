// src/generated/events.ts must be what json-schema-to-typescript makes of changesync/schema/events.json today.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { it } from "node:test";

import { OUTPUT_URL, generate } from "../scripts/generate-types.mjs";

it("src/generated/events.ts matches changesync/schema/events.json (run `npm run generate`)", async () => {
  const current = await readFile(OUTPUT_URL, "utf8");
  assert.ok(current === (await generate()), "src/generated/events.ts is out of date: run `npm run generate`");
});

it("the built package exports the generated payload types' runtime companions", async () => {
  const module = await import("../dist/index.js");
  for (const name of ["FlowEvents", "applyPatch", "documentKey", "reduce", "FlowEventsError", "JsonPatchError"]) {
    assert.equal(typeof module[name], "function", name);
  }
  const declarations = await readFile(new URL("../dist/index.d.ts", import.meta.url), "utf8");
  assert.match(declarations, /export type \* from "\.\/generated\/events\.js"/);
});
