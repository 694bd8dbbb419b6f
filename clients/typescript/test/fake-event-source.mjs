// A stand-in for the browser's EventSource: records what FlowEvents opens and lets a test drive it.
export class FakeEventSource {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 2;
  /** Every instance created, in order. */
  static instances = [];

  static reset() {
    FakeEventSource.instances = [];
  }

  static get last() {
    return FakeEventSource.instances.at(-1);
  }

  constructor(url, init = {}) {
    this.url = new URL(url, "http://page.test");
    this.withCredentials = Boolean(init.withCredentials);
    this.readyState = FakeEventSource.CONNECTING;
    this.lastEventId = "";
    this.listeners = new Map();
    FakeEventSource.instances.push(this);
  }

  addEventListener(type, listener) {
    if (!this.listeners.has(type)) this.listeners.set(type, []);
    this.listeners.get(type).push(listener);
  }

  close() {
    this.readyState = FakeEventSource.CLOSED;
  }

  dispatch(type, event) {
    for (const listener of this.listeners.get(type) ?? []) listener(event);
  }

  /** The server answered 200 and the stream is open. */
  open() {
    this.readyState = FakeEventSource.OPEN;
    this.dispatch("open", { type: "open" });
  }

  /** One SSE message; like a browser, an omitted id keeps the previous one. */
  emit(payload, id) {
    if (id !== undefined) this.lastEventId = id;
    this.dispatch(payload.type, { type: payload.type, data: JSON.stringify(payload), lastEventId: this.lastEventId });
  }

  /** The stream failed: CONNECTING means the browser retries by itself, CLOSED that it gave up. */
  fail(readyState = FakeEventSource.CONNECTING) {
    this.readyState = readyState;
    this.dispatch("error", { type: "error" });
  }
}
