/**
 * A stand-in for the browser's `EventSource` in TestBed tests: it records each stream the client
 * opens, and the test plays the server's part (`open`, `send`, `fail`).
 *
 * Like a real `EventSource` under zone.js, each listener runs in the zone that was current when it
 * was added, so a test can see where the service registered and where its values arrive.
 */
import { NgZone } from "@angular/core";
import type { EventSourceLike, Payload } from "@changesync/client";

type Listener = (event: MessageEvent<string>) => void;

interface ZoneLike {
  run<T>(fn: () => T): T;
}

function currentZone(): ZoneLike | null {
  return (globalThis as { Zone?: { current: ZoneLike } }).Zone?.current ?? null;
}

export class FakeEventSource implements EventSourceLike {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSED = 2;

  /** Every stream opened since the last `reset()`, oldest first. */
  static instances: FakeEventSource[] = [];

  static reset(): void {
    FakeEventSource.instances = [];
  }

  /** The newest stream; fails the test when there is none. */
  static get last(): FakeEventSource {
    const last = FakeEventSource.instances.at(-1);
    if (last === undefined) throw new Error("no EventSource was opened");
    return last;
  }

  /** The streams not closed yet. */
  static get openStreams(): FakeEventSource[] {
    return FakeEventSource.instances.filter((source) => source.readyState !== FakeEventSource.CLOSED);
  }

  readonly url: URL;
  readonly withCredentials: boolean;
  /** Whether the stream was created inside the Angular zone. */
  readonly createdInAngularZone = NgZone.isInAngularZone();
  readyState = FakeEventSource.CONNECTING;
  private lastEventId = "";
  private readonly listeners = new Map<string, { listener: Listener; zone: ZoneLike | null }[]>();

  constructor(url: string, init: { withCredentials?: boolean } = {}) {
    this.url = new URL(url, "http://app.test");
    this.withCredentials = init.withCredentials ?? false;
    FakeEventSource.instances.push(this);
  }

  /** The event types something listens to. */
  get types(): string[] {
    return [...this.listeners.keys()];
  }

  addEventListener(type: string, listener: Listener): void {
    const entries = this.listeners.get(type) ?? [];
    entries.push({ listener, zone: currentZone() });
    this.listeners.set(type, entries);
  }

  removeEventListener(type: string, listener: Listener): void {
    const entries = this.listeners.get(type) ?? [];
    this.listeners.set(type, entries.filter((entry) => entry.listener !== listener));
  }

  close(): void {
    this.readyState = FakeEventSource.CLOSED;
  }

  /** The service answered 200: the stream is open. */
  open(): void {
    this.readyState = FakeEventSource.OPEN;
    this.dispatch("open", { type: "open" });
  }

  /** One SSE message; like a browser, an omitted id keeps the previous one. */
  send(payload: Payload | { readonly type: string; readonly [field: string]: unknown }, id?: string): void {
    if (id !== undefined) this.lastEventId = id;
    this.dispatch(payload.type, { type: payload.type, data: JSON.stringify(payload), lastEventId: this.lastEventId });
  }

  /** The stream failed: CONNECTING means the browser retries by itself, CLOSED that it gave up. */
  fail(readyState: number = FakeEventSource.CLOSED): void {
    this.readyState = readyState;
    this.dispatch("error", { type: "error" });
  }

  private dispatch(type: string, event: object): void {
    for (const { listener, zone } of [...(this.listeners.get(type) ?? [])]) {
      const call = () => listener(event as MessageEvent<string>);
      if (zone === null) call();
      else zone.run(call);
    }
  }
}
