// Copies the compiled client (dist/**/*.js) into the Python package, where the live demo page loads
// it from (changesync/demo_page/client/): `pip install` then brings a page that works without npm.
// The copy drops the source-map comments (the maps are not shipped) and adds a one-line banner.
//
//   node scripts/demo-page-client.mjs                write the copy (run `npm run build` first)
//   node scripts/demo-page-client.mjs --check        exit 1 when the copy differs from dist/
//   node scripts/demo-page-client.mjs --dist DIR     read the compiled modules from DIR instead of dist/
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const DIST_DIR = fileURLToPath(new URL("../dist/", import.meta.url));
export const TARGET_DIR = fileURLToPath(new URL("../../../changesync/demo_page/client/", import.meta.url));

const BANNER = "// Compiled from clients/typescript/src; written by `npm run build:demo-page`. Do not edit.\n";
const SOURCE_MAP_COMMENT = /\n?\/\/# sourceMappingURL=\S+\s*$/;

/** The `.js` files under `root`, as sorted `/`-separated relative paths (none when `root` is missing). */
async function javascriptFiles(root) {
  let entries;
  try {
    entries = await readdir(root, { recursive: true, withFileTypes: true });
  } catch (error) {
    if (error.code === "ENOENT") return [];
    throw error;
  }
  return entries
    .filter((entry) => entry.isFile() && entry.name.endsWith(".js"))
    .map((entry) => path.relative(root, path.join(entry.parentPath ?? entry.path, entry.name)).split(path.sep).join("/"))
    .sort();
}

/** The copy as it must be: relative path → text, made from the compiled modules in `distDir`. */
export async function copyOf(distDir = DIST_DIR) {
  const files = new Map();
  for (const name of await javascriptFiles(distDir)) {
    const text = await readFile(path.join(distDir, name), "utf8");
    files.set(name, `${BANNER}${text.replace(SOURCE_MAP_COMMENT, "")}\n`);
  }
  return files;
}

/** How the files in `targetDir` differ from `expected`: one line per file, none when they agree. */
export async function differences(expected, targetDir = TARGET_DIR) {
  const found = await javascriptFiles(targetDir);
  const problems = found.filter((name) => !expected.has(name)).map((name) => `${name}: not in the build`);
  for (const [name, text] of expected) {
    if (!found.includes(name)) problems.push(`${name}: missing`);
    else if ((await readFile(path.join(targetDir, name), "utf8")) !== text) problems.push(`${name}: differs`);
  }
  return problems.sort();
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const distDir = args.includes("--dist") ? path.resolve(args[args.indexOf("--dist") + 1] ?? "") : DIST_DIR;
  const expected = await copyOf(distDir);
  if (expected.size === 0) {
    console.error(`no compiled modules in ${distDir}: run \`npm run build\` first`);
    process.exit(1);
  }
  if (args.includes("--check")) {
    const problems = await differences(expected);
    if (problems.length > 0) {
      console.error(`${TARGET_DIR} is out of date: run \`npm run build:demo-page\`\n  ${problems.join("\n  ")}`);
      process.exit(1);
    }
  } else {
    await rm(TARGET_DIR, { recursive: true, force: true });
    for (const [name, text] of expected) {
      const file = path.join(TARGET_DIR, name);
      await mkdir(path.dirname(file), { recursive: true });
      await writeFile(file, text);
    }
    console.log(`wrote ${expected.size} modules to ${TARGET_DIR}`);
  }
}
