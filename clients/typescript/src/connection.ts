/**
 * `Connection`: one flow's `EventSource`, opened, watched and reopened. It knows nothing of the
 * events' content: it hands each message on, and says when the stream opened, dropped or failed.
 *
 * - Token mode: every attempt is a new `EventSource` with a fresh token (`getToken`, bounded by a
 *   timeout). Cookie mode: after a healthy connection drops, the browser's own reconnection (with
 *   `Last-Event-ID`) is let be; otherwise the client reconnects itself.
 * - A connection that fails before it opened is probed for its HTTP status (see `retry.ts`): 401
 *   gets one more attempt with a fresh token; 401 again, 403 and 404 are terminal.
 * - The backoff starts over once a connection is healthy: its SNAPSHOT arrived (`healthy()`), or it
 *   stayed open `HEALTHY_AFTER_MS`.
 */
import { FlowEventsError } from "./errors.js";
import { Backoff, type FetchLike, HEALTHY_AFTER_MS, probeStatus, refusal, tokenWithin } from "./retry.js";

/** The part of the browser's `EventSource` that `FlowEvents` uses (tests pass a fake). */
export interface EventSourceLike {
  readonly readyState: number;
  addEventListener(type: string, listener: (event: MessageEvent<string>) => void): void;
  close(): void;
}
export type EventSourceConstructor = new (url: string, init?: { withCredentials?: boolean }) => EventSourceLike;

const CONNECTING = 0;

export interface ConnectionOptions {
  readonly EventSource: EventSourceConstructor;
  readonly getToken?: (() => string | Promise<string>) | undefined;
  readonly tokenTimeoutMs: number;
  readonly withCredentials: boolean;
  readonly fetch: FetchLike | undefined;
  readonly reconnectDelayMs: number;
  readonly maxReconnectDelayMs: number;
}

/** What a `Connection` tells its owner. */
export interface ConnectionEvents {
  /** The URL of the next attempt; `token` is undefined in cookie mode. */
  url(token: string | undefined): string;
  /** The stream is open. */
  opened(): void;
  /** A message of one of the listened types. */
  message(type: string, event: MessageEvent<string>): void;
  /** `connecting`: the stream dropped and is being reopened; `error`: an attempt failed, retried; `closed`: terminal. */
  failed(status: "connecting" | "error" | "closed", error: FlowEventsError | null): void;
}

export class Connection {
  private source: EventSourceLike | null = null;
  /** Bumped at every attempt: callbacks of older ones are ignored. */
  private attempt = 0;
  private opened = false;
  private healthy = false;
  /** A 401 was answered with one more attempt (with a fresh token); the next 401 is final. */
  private unauthorizedRetried = false;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private healthTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly backoff: Backoff;
  private readonly types = new Set<string>();

  constructor(
    private readonly options: ConnectionOptions,
    private readonly events: ConnectionEvents,
    types: Iterable<string>,
  ) {
    this.backoff = new Backoff(options.reconnectDelayMs, options.maxReconnectDelayMs);
    for (const type of types) this.types.add(type);
  }

  /** Listens to `type` from now on, on the open stream too. */
  listen(type: string): void {
    if (this.types.has(type)) return;
    this.types.add(type);
    if (this.source !== null) this.listenOn(this.source, this.attempt, type);
  }

  /** Opens a new stream now, dropping the current one. */
  open(): void {
    void this.connect();
  }

  /** Forgets past failures: the next failure waits the base delay, a 401 gets its second chance again. */
  reset(): void {
    this.backoff.succeed();
    this.unauthorizedRetried = false;
  }

  /** The stream proved healthy (it delivered its SNAPSHOT): the backoff starts over. */
  markHealthy(): void {
    this.healthy = true;
    this.backoff.succeed();
  }

  /** Closes the stream and cancels the timers; callbacks of the attempt in flight are ignored from now on. */
  close(): void {
    this.attempt++;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    if (this.healthTimer !== null) clearTimeout(this.healthTimer);
    this.retryTimer = this.healthTimer = null;
    this.source?.close();
    this.source = null;
    this.opened = this.healthy = false;
  }

  private async connect(): Promise<void> {
    this.close();
    const attempt = this.attempt;
    const { getToken, withCredentials } = this.options;
    let token: string | undefined;
    if (getToken !== undefined) {
      try {
        token = await tokenWithin(getToken, this.options.tokenTimeoutMs);
      } catch (error) {
        if (attempt === this.attempt) this.retryLater(error as FlowEventsError);
        return;
      }
      if (attempt !== this.attempt) return;
    }
    const url = this.events.url(token);
    const source = new this.options.EventSource(url, { withCredentials });
    this.source = source;
    source.addEventListener("open", () => {
      if (attempt === this.attempt) this.onOpen();
    });
    source.addEventListener("error", () => {
      if (attempt !== this.attempt) return;
      if (this.opened) this.onDrop(source);
      else void this.onRefused(source, url, attempt);
    });
    for (const type of this.types) this.listenOn(source, attempt, type);
  }

  private listenOn(source: EventSourceLike, attempt: number, type: string): void {
    source.addEventListener(type, (event) => {
      if (attempt === this.attempt) this.events.message(type, event);
    });
  }

  private onOpen(): void {
    this.opened = true;
    this.unauthorizedRetried = false;
    this.healthTimer = setTimeout(() => {
      this.healthTimer = null;
      this.markHealthy();
    }, HEALTHY_AFTER_MS);
    this.events.opened();
  }

  /** The open stream failed. */
  private onDrop(source: EventSourceLike): void {
    const healthy = this.healthy;
    this.opened = this.healthy = false;
    if (this.healthTimer !== null) clearTimeout(this.healthTimer);
    this.healthTimer = null;
    // Cookie mode, after a healthy connection: the browser reconnects by itself, with Last-Event-ID
    // (kept fresh by the heartbeats). The failure still counts, in case that one does not last.
    if (this.options.getToken === undefined && source.readyState === CONNECTING && healthy) {
      this.backoff.fail();
      this.events.failed("connecting", null);
      return;
    }
    // Token mode (the URL's token may have expired), or a connection that did not last: a new
    // EventSource, with backoff, a fresh token and ?lastEventId=.
    source.close();
    if (this.source === source) this.source = null;
    this.events.failed("connecting", null);
    this.schedule();
  }

  /** The stream failed before it opened: the status of the same URL says whether to retry. */
  private async onRefused(source: EventSourceLike, url: string, attempt: number): Promise<void> {
    source.close();
    if (this.source === source) this.source = null;
    const status = await probeStatus(this.options.fetch, url, this.options.withCredentials);
    if (attempt !== this.attempt) return;
    if (status === 401 && !this.unauthorizedRetried) {
      this.unauthorizedRetried = true; // the token may have just expired: once more, with a fresh one
      void this.connect();
      return;
    }
    const { kind, message } = refusal(status);
    const error = new FlowEventsError(message, kind, { status: status ?? undefined });
    if (!error.terminal) {
      this.retryLater(error);
      return;
    }
    this.close();
    this.events.failed("closed", error);
  }

  private retryLater(error: FlowEventsError): void {
    this.events.failed("error", error);
    this.schedule();
  }

  private schedule(): void {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.connect();
    }, this.backoff.fail());
  }
}
