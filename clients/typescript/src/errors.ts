/**
 * `FlowEventsError`: what went wrong, as a `kind`. Each is reported on the `error` event.
 *
 * ```
 * connection, retried with backoff   network (no answer, or an answer without an error status), server (another
 *                                    error status: 5xx, 429…), token (getToken threw or did not answer in time)
 * connection, terminal (closed)      unauthorized (401 twice in a row), forbidden (403), not-found (404)
 * one event, one document            parse, refetch, conflict (a local edit no longer applies), pending-timeout
 * ```
 */

export type FlowErrorKind =
  | "network"
  | "server"
  | "token"
  | "unauthorized"
  | "forbidden"
  | "not-found"
  | "parse"
  | "refetch"
  | "conflict"
  | "pending-timeout"
  | "listener";

/** Errors after which the client stops connecting (status `closed`) until `reconnect()`. */
export const TERMINAL_ERROR_KINDS: readonly FlowErrorKind[] = ["unauthorized", "forbidden", "not-found"];

export interface FlowEventsErrorOptions {
  readonly cause?: unknown;
  /** The HTTP status the service answered, when it is known. */
  readonly status?: number | undefined;
  /** The local edit this error is about (`conflict`, `pending-timeout`). */
  readonly mutationId?: string | undefined;
}

/** Something went wrong; `kind` says what. Only `unauthorized`, `forbidden` and `not-found` stop the stream. */
export class FlowEventsError extends Error {
  override readonly name = "FlowEventsError";
  readonly status?: number;
  readonly mutationId?: string;

  constructor(
    message: string,
    readonly kind: FlowErrorKind,
    options: FlowEventsErrorOptions = {},
  ) {
    super(message, "cause" in options ? { cause: options.cause } : undefined);
    if (options.status !== undefined) this.status = options.status;
    if (options.mutationId !== undefined) this.mutationId = options.mutationId;
  }

  /** True for the errors that end the stream (`status` becomes `closed`). */
  get terminal(): boolean {
    return TERMINAL_ERROR_KINDS.includes(this.kind);
  }
}
