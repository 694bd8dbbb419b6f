/**
 * `PublishError`: changesync refused an event, or gave no answer.
 *
 * Mistakes in the call itself (a flow id the service would refuse, data that is not an object, bad
 * options) are `TypeError`s or `RangeError`s thrown before any request; an aborted call rejects with
 * the signal's reason.
 */

/** What `PublishError.error` holds when no answer came. */
export type NoAnswer = "timeout" | "network";

/** Statuses worth another attempt: too fast (429) and hub unavailable (503). No answer is retried too. */
export const RETRYABLE_STATUSES: ReadonlySet<number> = new Set([429, 503]);

export interface PublishErrorInit {
  /** The HTTP status; undefined when no answer came. */
  readonly status: number | undefined;
  readonly error: string;
  readonly detail?: string | undefined;
  readonly retryAfterS?: number | undefined;
  readonly attempts: number;
  readonly body?: unknown;
  readonly cause?: unknown;
}

export class PublishError extends Error {
  override readonly name = "PublishError";
  /** The HTTP status of the last answer; undefined when none came (`error` is then `timeout` or `network`). */
  readonly status: number | undefined;
  /**
   * The answer's `error` field as changesync sends it: `unauthorized`, `forbidden`, `unknown-type`,
   * `too many events`, … (`HTTP <status>` when the answer is not changesync's JSON); or a `NoAnswer`.
   */
  readonly error: string;
  /** The answer's `detail`, when it has one (which role is needed, which types are allowed, …). */
  readonly detail: string | undefined;
  /** The answer's `Retry-After`, in seconds (changesync sends it with 429 and 503). */
  readonly retryAfterS: number | undefined;
  /** Requests made for this event, retries included. */
  readonly attempts: number;
  /** The answer's parsed JSON body (for fields such as `limit_bytes` or `expected`); undefined if none. */
  readonly body: unknown;

  constructor(init: PublishErrorInit) {
    super(describe(init), init.cause === undefined ? undefined : { cause: init.cause });
    this.status = init.status;
    this.error = init.error;
    this.detail = init.detail;
    this.retryAfterS = init.retryAfterS;
    this.attempts = init.attempts;
    this.body = init.body;
  }

  /** True for the failures this package retries: 429, 503 and no answer (timeout, network). */
  get retryable(): boolean {
    return this.status === undefined || RETRYABLE_STATUSES.has(this.status);
  }
}

function describe(init: PublishErrorInit): string {
  const tries = init.attempts === 1 ? "1 attempt" : `${init.attempts} attempts`;
  if (init.status === undefined) {
    const what = init.detail === undefined ? init.error : `${init.error}: ${init.detail}`;
    return `no answer from changesync after ${tries} (${what})`;
  }
  const detail = init.detail === undefined ? "" : ` (${init.detail})`;
  return `changesync refused the event after ${tries}: ${init.status} ${init.error}${detail}`;
}
