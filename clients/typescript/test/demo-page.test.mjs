// changesync/demo_page/client/ must be the client as dist/ holds it now: the demo page ships that copy.
import assert from "node:assert/strict";
import { it } from "node:test";

import { copyOf, differences } from "../scripts/demo-page-client.mjs";

it("changesync/demo_page/client/ is the built client (run `npm run build:demo-page`)", async () => {
  const expected = await copyOf();
  assert.ok(expected.has("index.js"), "dist/ holds no build: run `npm run build`");
  assert.deepEqual(await differences(expected), [], "the demo page's copy is out of date: run `npm run build:demo-page`");
});
