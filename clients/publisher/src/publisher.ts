/**
 * `Publisher`: sends events that are not database writes to changesync (`POST /flows/{flowId}/events`).
 */
import { PublishError } from "./errors.js";
import { backoffMs, parseRetryAfterS, sleep } from "./retry.js";

/** The flow ids changesync accepts (its `FLOW_ID_PATTERN`): 1-256 characters of A-Z a-z 0-9 _ . : ~ - */
export const FLOW_ID_PATTERN = /^[A-Za-z0-9_.:~-]{1,256}$/;

/** The event types of changesync's default routes. A deployment publishes those its `publish.event_types` lists. */
export const DEFAULT_EVENT_TYPES = ["SYNC_CANVAS", "EXECUTION_UPDATE", "LOG_STREAM"] as const;
export type DefaultEventType = (typeof DEFAULT_EVENT_TYPES)[number];
/** A route's event type: one of the defaults, or one that a deployment's own routes define. */
export type EventType = DefaultEventType | (string & {});

/** One chunk of a node's output in a flow run, as the default `flow_logs` route carries it. */
export interface LogChunk {
  readonly executionId: string;
  readonly nodeId: string;
  /** The chunk's position in the node's output (0, 1, …): readers order by it and can drop a repeat. */
  readonly seq: number;
  readonly chunk: string;
  /**
   * More fields of the document. The route's rules apply as to a database write: by default fields
   * starting with `_` (but `_id`) are stripped, and a private document is refused (422).
   */
  readonly [field: string]: unknown;
}

/** What changesync answered: the event's id in the flow's stream (what clients resume from). */
export interface Published {
  readonly id: string;
  readonly type: string;
  readonly flowId: string;
}

export interface PublishOptions {
  /** The route's collection, needed when several routes share the event type (SYNC_CANVAS by default). */
  readonly collection?: string;
  /** Aborts the call, retries and waits included; it then rejects with the signal's reason. */
  readonly signal?: AbortSignal;
}

/** Returns the bearer token; called before every attempt, so it may refresh a token that expires. */
export type TokenSource = () => string | Promise<string>;

interface CommonOptions {
  /** The service's origin and path prefix, e.g. `http://changesync:8000`. */
  readonly baseUrl: string;
  /** The limit of each attempt, answer body included (default 10000 ms). */
  readonly timeoutMs?: number;
  /** Further attempts after a 429, a 503, a timeout or a network error (default 2; 0: none). */
  readonly retries?: number;
  /** The first wait before a retry when the answer has no `Retry-After`, doubled per retry (default 250 ms). */
  readonly retryDelayMs?: number;
  /** The longest wait: a `Retry-After` beyond it is not waited for, the error is thrown (default 5000 ms). */
  readonly maxRetryDelayMs?: number;
  /** The `fetch` implementation (default: the global one). */
  readonly fetch?: typeof globalThis.fetch;
}

/** A JWT with the publisher role (`publish.role`, default `changesync-publisher`), fixed or fetched. */
type Credentials =
  | { readonly token: string; readonly getToken?: never }
  | { readonly getToken: TokenSource; readonly token?: never }
  | { readonly token?: never; readonly getToken?: never };

export type PublisherOptions = CommonOptions & Credentials;

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_RETRIES = 2;
const DEFAULT_RETRY_DELAY_MS = 250;
const DEFAULT_MAX_RETRY_DELAY_MS = 5_000;
// How much of a non-JSON error body (a proxy's HTML page) goes into `detail`.
const MAX_DETAIL_CHARS = 200;

/** The one request an event makes, sent again on a retry. */
interface Outgoing {
  readonly url: string;
  readonly flowId: string;
  readonly type: string;
  readonly body: string;
}

type Outcome = { readonly published: Published } | { readonly refused: PublishError };

/**
 * Publishes events to changesync's flows; one instance per service, shared by all calls.
 *
 * ```ts
 * const publisher = new Publisher({ baseUrl: "http://changesync:8000", getToken: () => tokens.publisher() });
 * await publisher.logChunk(flowId, { executionId, nodeId, seq, chunk: "Hello " });
 * ```
 */
export class Publisher {
  /** `options.baseUrl` without trailing slashes. */
  readonly baseUrl: string;
  private readonly getToken: TokenSource | undefined;
  private readonly timeoutMs: number;
  private readonly retries: number;
  private readonly retryDelayMs: number;
  private readonly maxRetryDelayMs: number;
  private readonly fetchImpl: typeof globalThis.fetch;

  constructor(options: PublisherOptions) {
    let url: URL;
    try {
      url = new URL(options.baseUrl);
    } catch (cause) {
      throw new TypeError(`baseUrl must be an absolute http(s) URL, got ${JSON.stringify(options.baseUrl)}`, { cause });
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new TypeError(`baseUrl must be an absolute http(s) URL, got ${JSON.stringify(options.baseUrl)}`);
    }
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    if (options.token !== undefined && options.getToken !== undefined) {
      throw new TypeError("pass token or getToken, not both");
    }
    if (options.token !== undefined) {
      if (typeof options.token !== "string" || options.token === "") {
        throw new TypeError("token must be a non-empty string");
      }
      const token = options.token;
      this.getToken = () => token;
    } else {
      this.getToken = options.getToken;
    }
    this.timeoutMs = positive("timeoutMs", options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    this.retries = options.retries ?? DEFAULT_RETRIES;
    if (!Number.isInteger(this.retries) || this.retries < 0) {
      throw new RangeError(`retries must be an integer >= 0, got ${this.retries}`);
    }
    this.retryDelayMs = atLeastZero("retryDelayMs", options.retryDelayMs ?? DEFAULT_RETRY_DELAY_MS);
    this.maxRetryDelayMs = atLeastZero("maxRetryDelayMs", options.maxRetryDelayMs ?? DEFAULT_MAX_RETRY_DELAY_MS);
    const fetchImpl = options.fetch ?? globalThis.fetch;
    if (typeof fetchImpl !== "function") throw new TypeError("no fetch here: pass options.fetch");
    this.fetchImpl = fetchImpl;
  }

  /**
   * Publishes one event to the flow's subscribers. Resolves with its id once changesync accepted it
   * (202); rejects with a `PublishError` when it refused it or gave no answer, after the retries.
   * Await each call before the next to keep a flow's events in order.
   */
  async publish(flowId: string, type: EventType, data: object, options: PublishOptions = {}): Promise<Published> {
    if (typeof flowId !== "string" || !FLOW_ID_PATTERN.test(flowId)) {
      throw new TypeError(`flowId must be 1-256 characters of A-Z a-z 0-9 _ . : ~ -, got ${JSON.stringify(flowId)}`);
    }
    if (typeof type !== "string" || type === "") {
      throw new TypeError(`type must be a route's event type, got ${JSON.stringify(type)}`);
    }
    if (typeof data !== "object" || data === null || Array.isArray(data)) {
      throw new TypeError(`data must be a JSON object, got ${Array.isArray(data) ? "an array" : String(data)}`);
    }
    const { collection, signal } = options;
    const body = JSON.stringify(collection === undefined ? { type, data } : { type, data, collection });
    const request: Outgoing = { url: `${this.baseUrl}/flows/${flowId}/events`, flowId, type, body };
    for (let attempt = 1; ; attempt += 1) {
      signal?.throwIfAborted();
      const outcome = await this.attempt(request, attempt, signal);
      if ("published" in outcome) return outcome.published;
      const error = outcome.refused;
      if (!error.retryable || attempt > this.retries) throw error;
      const delayMs =
        error.retryAfterS === undefined
          ? backoffMs(attempt, this.retryDelayMs, this.maxRetryDelayMs)
          : error.retryAfterS * 1000;
      if (delayMs > this.maxRetryDelayMs) throw error;
      await sleep(delayMs, signal);
    }
  }

  /** Publishes one LOG_STREAM chunk (the default `flow_logs` route). */
  logChunk(flowId: string, chunk: LogChunk, options: PublishOptions = {}): Promise<Published> {
    return this.publish(flowId, "LOG_STREAM", chunk, options);
  }

  /** One request: the accepted event, or the error it ended with. Only an abort or `getToken` throws. */
  private async attempt(request: Outgoing, attempt: number, signal: AbortSignal | undefined): Promise<Outcome> {
    const headers: Record<string, string> = { "Content-Type": "application/json", Accept: "application/json" };
    if (this.getToken !== undefined) headers["Authorization"] = `Bearer ${await this.getToken()}`;
    signal?.throwIfAborted(); // an abort while the token came: its event has fired already
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, this.timeoutMs);
    const onAbort = (): void => controller.abort(signal?.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    let status: number;
    let text: string;
    let retryAfter: string | null;
    try {
      const init = { method: "POST", headers, body: request.body, signal: controller.signal };
      const fetchImpl = this.fetchImpl; // called unbound: a browser's fetch refuses another `this`
      const response = await fetchImpl(request.url, init);
      status = response.status;
      retryAfter = response.headers.get("retry-after");
      text = await response.text();
    } catch (cause) {
      if (signal?.aborted) throw signal.reason;
      const error = timedOut ? "timeout" : "network";
      const detail = timedOut ? `no answer within ${this.timeoutMs} ms` : String(cause);
      return { refused: new PublishError({ status: undefined, error, detail, attempts: attempt, cause }) };
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    }
    const parsed = parseJson(text);
    if (status >= 200 && status < 300) {
      if (isRecord(parsed) && typeof parsed["id"] === "string") {
        const type = typeof parsed["type"] === "string" ? parsed["type"] : request.type;
        const flowId = typeof parsed["flowId"] === "string" ? parsed["flowId"] : request.flowId;
        return { published: { id: parsed["id"], type, flowId } };
      }
      // Perhaps accepted all the same: not retried, so as not to publish it twice.
      const detail = `a ${status} answer without an event id: ${text.slice(0, MAX_DETAIL_CHARS)}`;
      const error = "unexpected-answer";
      return { refused: new PublishError({ status, error, detail, attempts: attempt, body: parsed }) };
    }
    const record = isRecord(parsed) ? parsed : undefined;
    return {
      refused: new PublishError({
        status,
        error: typeof record?.["error"] === "string" ? record["error"] : `HTTP ${status}`,
        detail: typeof record?.["detail"] === "string" ? record["detail"] : record ? undefined : snippet(text),
        retryAfterS: parseRetryAfterS(retryAfter),
        attempts: attempt,
        body: parsed,
      }),
    };
  }
}

function positive(name: string, value: number): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
    throw new RangeError(`${name} must be a number > 0, got ${value}`);
  }
  return value;
}

function atLeastZero(name: string, value: number): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
    throw new RangeError(`${name} must be a number >= 0, got ${value}`);
  }
  return value;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function snippet(text: string): string | undefined {
  const trimmed = text.trim();
  return trimmed === "" ? undefined : trimmed.slice(0, MAX_DETAIL_CHARS);
}
