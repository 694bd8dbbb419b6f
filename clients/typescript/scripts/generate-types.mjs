// Generates src/generated/events.ts from the JSON Schema of the event payloads
// (changesync/schema/events.json, itself generated from changesync/payloads.py).
//
//   node scripts/generate-types.mjs           write the file
//   node scripts/generate-types.mjs --check   exit 1 when the file differs from a fresh generation
import { readFile, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { compile } from "json-schema-to-typescript";

export const SCHEMA_URL = new URL("../../../changesync/schema/events.json", import.meta.url);
export const OUTPUT_URL = new URL("../src/generated/events.ts", import.meta.url);

const BANNER = `/* Generated from changesync/schema/events.json by \`npm run generate\` (json-schema-to-typescript).
 * Do not edit: change changesync/payloads.py, run \`python -m changesync.schema\`, then \`npm run generate\`.
 */`;

export async function generate() {
  const schema = JSON.parse(await readFile(SCHEMA_URL, "utf8"));
  return compile(schema, "Payload", {
    bannerComment: BANNER,
    additionalProperties: false,
    unreachableDefinitions: true,
    strictIndexSignatures: true,
    format: true,
    style: { printWidth: 120, singleQuote: false },
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const text = await generate();
  if (process.argv.includes("--check")) {
    const current = await readFile(OUTPUT_URL, "utf8").catch(() => "");
    if (current !== text) {
      console.error("src/generated/events.ts is out of date: run `npm run generate`");
      process.exit(1);
    }
  } else {
    await writeFile(OUTPUT_URL, text);
    console.log(`wrote ${fileURLToPath(OUTPUT_URL)}`);
  }
}
