// Shared by the FlowEvents tests: a flow on the fake EventSource, a fake `fetch` for the status probe, waits.
import { FlowEvents } from "../dist/index.js";
import { FakeEventSource } from "./fake-event-source.mjs";
import { FLOW } from "./payloads.mjs";

/** Lets pending promise callbacks run (not timers: those may be mocked). */
export const flush = async (rounds = 5) => {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
};

/**
 * A fake `fetch` for the probe of a refused connection: answers the statuses in `statuses` in turn
 * (the last one repeats); `null` stands for a network error. `calls` records each request.
 */
export function fakeFetch(...statuses) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url: new URL(url), init });
    const status = statuses.length > 1 ? statuses.shift() : statuses[0];
    if (status === null || status === undefined) throw new TypeError("Failed to fetch");
    let cancelled = false;
    return { status, body: { cancel: async () => void (cancelled = true) }, get cancelled() { return cancelled; } };
  };
  fetch.calls = calls;
  return fetch;
}

const flows = [];

/** A FlowEvents on the fake EventSource; `fetch` fails like a network error unless given. */
export function open(options = {}) {
  const flow = new FlowEvents({
    baseUrl: "https://sync.example.com/",
    flowId: FLOW,
    EventSource: FakeEventSource,
    fetch: fakeFetch(null),
    reconnectDelayMs: 1,
    maxReconnectDelayMs: 4,
    ...options,
  });
  flows.push(flow);
  return flow;
}

/** A flow whose first stream is open and has delivered `payloads`. */
export async function live(options = {}, ...payloads) {
  const flow = open(options);
  await flush();
  const source = FakeEventSource.last;
  source.open();
  payloads.forEach((payload, i) => source.emit(payload, `id-${i}`));
  return { flow, source };
}

/** Closes the flows made by `open`/`live` (call it in `afterEach`). */
export function closeAll() {
  for (const flow of flows.splice(0)) flow.close();
}

/** Every value of `type` the flow emits from now on. */
export function record(flow, type) {
  const values = [];
  flow.on(type, (value) => values.push(value));
  return values;
}
