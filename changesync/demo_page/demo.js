// The live demo page: one flow's canvas, its latest execution and the LLM output of each node, kept
// current by the changesync browser client (./client/, the compiled clients/typescript).
//
// Open it as <service>/demo/#token=<JWT>&flow=<flow id>; both are optional (no token: cookie mode,
// or a service with authentication off; the flow defaults to the demo's). The fragment never
// reaches a server: the token travels only as the event stream's access_token, which the
// service's logs redact.
import { FlowEvents, documentsOf } from "./client/index.js";

const SVG = "http://www.w3.org/2000/svg";
const NODE_WIDTH = 120;
const NODE_HEIGHT = 48;
// The canvas (in the flow's units) is at least this large, keeps this margin around the nodes,
// and only grows, so that it does not jump while a node is dragged.
const MIN_WIDTH = 960;
const MIN_HEIGHT = 400;
const MARGIN = 40;
// How long the indicator says "resynced" after a RESYNC.
const RESYNC_SHOWN_MS = 5000;
const COUNTED_TYPES = ["SNAPSHOT", "SYNC_CANVAS", "EXECUTION_UPDATE", "LOG_STREAM", "RESYNC"];

const fragment = new URLSearchParams(location.hash.slice(1));
const token = fragment.get("token");
const flowId = fragment.get("flow") || "demo-flow";
// The page lives at <service>/demo/: the service's base path is the one above it.
const baseUrl = new URL("../", location.href).pathname.replace(/\/+$/, "");

const byId = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const nodeViews = new Map(); // node id → { group, label, status }
const edgeViews = new Map(); // edge id → path
const logViews = new Map(); // node id → { item, name, badge, text }
const counts = new Map(COUNTED_TYPES.map((type) => [type, 0]));
let view = { width: MIN_WIDTH, height: MIN_HEIGHT };
let everLive = false;
let lastResync = null; // { reason, at }
let renderQueued = false;

byId("flow-id").textContent = flowId;
// Another token or flow in the address: start again with it.
addEventListener("hashchange", () => location.reload());

const flow = new FlowEvents({
  baseUrl,
  flowId,
  ...(token ? { getToken: () => token } : {}),
});
flow.on("state", queueRender);
for (const type of COUNTED_TYPES) {
  flow.on(type, () => counts.set(type, (counts.get(type) ?? 0) + 1));
}
flow.on("RESYNC", (payload) => {
  lastResync = { reason: payload.reason, at: Date.now() };
  setTimeout(queueRender, RESYNC_SHOWN_MS + 50);
});
queueRender();

function queueRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render(flow.state);
  });
}

function render(state) {
  const board = state.collections.flowboards?.[flowId] ?? null;
  const run = latestRun(documentsOf(state, "flow_executions"));
  const nodes = Array.isArray(board?.nodes) ? board.nodes.filter((node) => typeof node?.id === "string") : [];
  const edges = Array.isArray(board?.edges) ? board.edges.filter((edge) => typeof edge?.id === "string") : [];
  renderCanvas(nodes, edges, run);
  renderRun(nodes, run, run === null ? {} : (state.logText[String(run._id)] ?? {}));
  renderIndicator(state);
  byId("counts").textContent = [...counts].map(([type, count]) => `${type} ${count}`).join(" · ");
}

/** The execution with the highest `run` number (the latest one inserted on a tie). */
function latestRun(executions) {
  let latest = null;
  for (const execution of executions) {
    if (latest === null || Number(execution.run ?? 0) >= Number(latest.run ?? 0)) latest = execution;
  }
  return latest;
}

function statusOf(run, nodeId) {
  const status = run?.nodes?.[nodeId]?.status;
  return typeof status === "string" ? status : "idle";
}

function labelOf(node) {
  const label = node.data?.label;
  return typeof label === "string" && label ? label : node.id;
}

function svgElement(name, attributes) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  return element;
}

// --- the canvas -----------------------------------------------------------------------------------

function renderCanvas(nodes, edges, run) {
  const centres = new Map();
  let right = 0;
  let bottom = 0;
  for (const node of nodes) {
    const x = Number(node.position?.x) || 0;
    const y = Number(node.position?.y) || 0;
    const nodeView = nodeViews.get(node.id) ?? createNode(node);
    // A transform set through the CSSOM (not a style attribute, which the page's CSP forbids)
    // moves the node with the CSS transition.
    nodeView.group.style.transform = `translate(${x}px, ${y}px)`;
    nodeView.group.dataset.x = String(x);
    nodeView.group.dataset.y = String(y);
    const status = statusOf(run, node.id);
    nodeView.group.dataset.status = status;
    nodeView.label.textContent = labelOf(node);
    nodeView.status.textContent = status;
    nodeView.seen = true;
    centres.set(node.id, [x + NODE_WIDTH / 2, y + NODE_HEIGHT / 2]);
    right = Math.max(right, x + NODE_WIDTH);
    bottom = Math.max(bottom, y + NODE_HEIGHT);
  }
  removeUnseen(nodeViews, (nodeView) => nodeView.group);

  for (const edge of edges) {
    const from = centres.get(edge.source);
    const to = centres.get(edge.target);
    if (from === undefined || to === undefined) continue;
    let path = edgeViews.get(edge.id);
    if (path === undefined) {
      path = svgElement("path", { class: "edge" });
      path.dataset.edge = edge.id;
      edgeViews.set(edge.id, path);
      byId("edges").append(path);
    }
    const d = `M ${from[0]} ${from[1]} L ${to[0]} ${to[1]}`;
    path.setAttribute("d", d);
    path.style.setProperty("d", `path("${d}")`); // the CSS property follows the node's transition
    path.dataset.source = String(edge.source);
    path.dataset.target = String(edge.target);
    path.seen = true;
  }
  removeUnseen(edgeViews, (path) => path);

  view = { width: Math.max(view.width, right + MARGIN), height: Math.max(view.height, bottom + MARGIN) };
  byId("canvas").setAttribute("viewBox", `0 0 ${view.width} ${view.height}`);
}

function createNode(node) {
  const group = svgElement("g", { class: "node" });
  group.dataset.node = node.id;
  const shape =
    node.type === "llm"
      ? svgElement("ellipse", { cx: NODE_WIDTH / 2, cy: NODE_HEIGHT / 2, rx: NODE_WIDTH / 2, ry: NODE_HEIGHT / 2 })
      : svgElement("rect", { width: NODE_WIDTH, height: NODE_HEIGHT, rx: 8 });
  shape.classList.add("shape");
  const label = svgElement("text", { class: "label", x: NODE_WIDTH / 2, y: NODE_HEIGHT / 2 - 7 });
  const status = svgElement("text", { class: "status", x: NODE_WIDTH / 2, y: NODE_HEIGHT / 2 + 11 });
  const title = svgElement("title", {});
  title.textContent = `${node.id} (${node.type ?? "node"})`;
  group.append(title, shape, label, status);
  byId("nodes").append(group);
  const nodeView = { group, label, status, seen: false };
  nodeViews.set(node.id, nodeView);
  return nodeView;
}

/** Removes the views the last render did not mark as seen, and clears the marks of the others. */
function removeUnseen(views, elementOf) {
  for (const [id, entry] of views) {
    if (!entry.seen) {
      elementOf(entry).remove();
      views.delete(id);
    }
    entry.seen = false;
  }
}

// --- the run and its LLM output ---------------------------------------------------------------------

function renderRun(nodes, run, logs) {
  const runLabel = byId("run");
  runLabel.textContent = run === null ? "none yet" : `run ${run.run ?? "?"} · ${run.status ?? "unknown"}`;
  runLabel.dataset.status = typeof run?.status === "string" ? run.status : "idle";
  // The board's nodes in order, then any node the run or its logs name that the board does not hold.
  const labels = new Map(nodes.map((node) => [node.id, labelOf(node)]));
  for (const nodeId of [...Object.keys(run?.nodes ?? {}), ...Object.keys(logs)]) {
    if (!labels.has(nodeId)) labels.set(nodeId, nodeId);
  }
  const list = byId("logs");
  let previous = null;
  for (const [nodeId, label] of labels) {
    const logView = logViews.get(nodeId) ?? createLog(nodeId);
    const status = statusOf(run, nodeId);
    logView.item.dataset.status = status;
    logView.name.textContent = `${label} (${nodeId})`;
    logView.badge.textContent = status;
    // The text so far (from the SNAPSHOT when the page joined a running execution) and every chunk since.
    const text = logs[nodeId]?.text ?? "";
    if (logView.text.textContent !== text) logView.text.textContent = text;
    logView.seen = true;
    // In the board's order; an item already in place is left alone (moving it restarts its animations).
    const expected = previous === null ? list.firstElementChild : previous.nextElementSibling;
    if (logView.item !== expected) list.insertBefore(logView.item, expected);
    previous = logView.item;
  }
  removeUnseen(logViews, (logView) => logView.item);
}

function createLog(nodeId) {
  const item = document.createElement("li");
  item.dataset.node = nodeId;
  const name = document.createElement("span");
  name.className = "name";
  const badge = document.createElement("span");
  badge.className = "badge";
  const text = document.createElement("p");
  text.className = "text";
  item.append(name, badge, text);
  const logView = { item, name, badge, text, seen: false };
  logViews.set(nodeId, logView);
  return logView;
}

// --- the connection -----------------------------------------------------------------------------------

function renderIndicator(state) {
  let indicatorState;
  let text;
  if (state.status === "live") {
    everLive = true;
    if (lastResync !== null && Date.now() - lastResync.at < RESYNC_SHOWN_MS) {
      indicatorState = "resynced";
      text = `resynced (${lastResync.reason})`;
    } else {
      indicatorState = "connected";
      text = "connected";
    }
  } else if (everLive) {
    indicatorState = "reconnecting";
    text = "reconnecting…";
  } else if (state.status === "error") {
    indicatorState = "reconnecting";
    text = "cannot connect; retrying…";
  } else {
    indicatorState = "connecting";
    text = "connecting…";
  }
  const indicator = byId("indicator");
  indicator.dataset.state = indicatorState;
  indicator.textContent = text;
  const problem = byId("problem");
  const detail = state.status === "live" ? null : problemText(state);
  problem.hidden = detail === null;
  problem.textContent = detail ?? "";
}

function problemText(state) {
  if (state.error === null) return null;
  const expiresAt = tokenExpiry();
  if (expiresAt !== null && expiresAt <= Date.now()) {
    return "The token in this page's address has expired: restart `changesync demo` and open the new link.";
  }
  if (token === null && !everLive) {
    return "Cannot connect. When the service's authentication is on, open this page with #token=<JWT>.";
  }
  return `${state.error.message} (the service may be restarting, or refuse this token or flow).`;
}

/** The token's `exp` in milliseconds, or null when it has none or is not a JWT. */
function tokenExpiry() {
  try {
    const claims = JSON.parse(atob(String(token).split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return typeof claims.exp === "number" ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}
