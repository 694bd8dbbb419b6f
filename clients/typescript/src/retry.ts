/**
 * How a connection is retried: the backoff, the status probe of a refused connection, and the token timeout.
 *
 * A browser's `EventSource` reports a refused connection as a bare `error` event, without the HTTP
 * status. One `fetch` of the same URL reads it, so that a 401, 403 or 404 ends the retries instead of
 * looking like a network failure retried forever.
 */
import { type FlowErrorKind, FlowEventsError } from "./errors.js";

/** A connection counts as healthy (the backoff starts over) after its SNAPSHOT, or after this long open. */
export const HEALTHY_AFTER_MS = 10_000;

/** The part of `fetch` the status probe uses (tests pass a fake). */
export type FetchLike = (
  url: string,
  init: { credentials: "include" | "same-origin"; signal: AbortSignal; headers: Record<string, string>; cache: "no-store" },
) => Promise<{ readonly status: number; readonly body?: { cancel(): Promise<void> } | null }>;

/**
 * Exponential backoff with "equal jitter": the n-th consecutive failure waits between half and all
 * of `min(max, base * 2^(n-1))`. Clients of a restarted server spread out, and the wait still never
 * shrinks from one failure to the next.
 */
export class Backoff {
  private failures = 0;

  constructor(
    private readonly baseMs: number,
    private readonly maxMs: number,
  ) {}

  /** Counts one more failure and returns how long to wait before the next attempt. */
  fail(): number {
    this.failures++;
    const ceiling = Math.min(this.maxMs, this.baseMs * 2 ** (this.failures - 1));
    return ceiling / 2 + (Math.random() * ceiling) / 2;
  }

  /** The connection proved healthy: the next failure waits the base delay again. */
  succeed(): void {
    this.failures = 0;
  }
}

/** What a refused connection's HTTP status means: the error's kind, and whether to retry. */
export function refusal(status: number | null): { kind: FlowErrorKind; message: string } {
  switch (status) {
    case 401:
      return { kind: "unauthorized", message: "the service refused the token (401)" };
    case 403:
      return { kind: "forbidden", message: "this subject may not read the flow (403)" };
    case 404:
      return { kind: "not-found", message: "no event stream at this URL (404)" };
    case null:
      return { kind: "network", message: "could not connect; retrying" };
    default:
      return status >= 400
        ? { kind: "server", message: `the service answered ${status}; retrying` }
        : { kind: "network", message: `the stream failed (the service answers ${status}); retrying` };
  }
}

/**
 * The HTTP status of `url`, read with one request whose body is dropped at once; null when there is
 * no `fetch` or no answer (network error, or a CORS answer the page may not read).
 */
export async function probeStatus(
  fetchImpl: FetchLike | undefined,
  url: string,
  withCredentials: boolean,
): Promise<number | null> {
  if (typeof fetchImpl !== "function") return null;
  const controller = new AbortController();
  try {
    const response = await fetchImpl(url, {
      credentials: withCredentials ? "include" : "same-origin",
      signal: controller.signal,
      headers: { Accept: "text/event-stream" },
      cache: "no-store",
    });
    void response.body?.cancel().catch(() => undefined);
    return response.status;
  } catch {
    return null;
  } finally {
    controller.abort();
  }
}

/** `getToken()`, bounded: a token that does not come within `timeoutMs` is a `token` error. */
export function tokenWithin(getToken: () => string | Promise<string>, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new FlowEventsError(`getToken did not answer within ${timeoutMs} ms`, "token")),
      timeoutMs,
    );
    const done = (): void => clearTimeout(timer);
    try {
      Promise.resolve(getToken()).then(
        (token) => (done(), resolve(token)),
        (cause: unknown) => (done(), reject(new FlowEventsError("could not get a token", "token", { cause }))),
      );
    } catch (cause) {
      done();
      reject(new FlowEventsError("could not get a token", "token", { cause }));
    }
  });
}
