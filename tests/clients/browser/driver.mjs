// Drives headless Chromium for tests/clients/test_browser.py and test_demo_page.py, one JSON request per stdin line:
//   {"id": 1, "method": "goto", "url": "..."}            -> {"id": 1, "result": null}
//   {"id": 2, "method": "evaluate", "expression": "..."}  -> {"id": 2, "result": <JSON value>}
//   {"id": 3, "method": "screenshot", "path": "..."}      -> {"id": 3, "result": null} (a PNG of the whole page)
//   {"id": 4, "method": "close"}
// Page console messages and errors are reported as {"event": "console" | "pageerror", "text": "..."}.
// Usage: node driver.mjs <node_modules dir holding playwright-core> <chromium> <user data dir>
import { createRequire } from "node:module";
import { createInterface } from "node:readline";

const [modules, executablePath, userDataDir] = process.argv.slice(2);
const { chromium } = createRequire(`${modules}/`)("playwright-core");

const send = (message) => process.stdout.write(`${JSON.stringify(message)}\n`);

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const page = context.pages()[0] ?? (await context.newPage());
page.on("console", (message) => send({ event: "console", text: `${message.type()}: ${message.text()}` }));
page.on("pageerror", (error) => send({ event: "pageerror", text: String(error) }));
send({ event: "ready", version: context.browser()?.version() ?? chromium.name() });

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const { id, method, url, expression, path } = JSON.parse(line);
  try {
    if (method === "goto") {
      await page.goto(url, { waitUntil: "load" });
      send({ id, result: null });
    } else if (method === "evaluate") {
      send({ id, result: await page.evaluate(expression) });
    } else if (method === "screenshot") {
      await page.screenshot({ path, fullPage: true });
      send({ id, result: null });
    } else if (method === "close") {
      send({ id, result: null });
      break;
    } else {
      throw new Error(`unknown method ${method}`);
    }
  } catch (error) {
    send({ id, error: String(error?.stack ?? error) });
  }
}
await context.close();
