// Compiled from clients/typescript/src; written by `npm run build:demo-page`. Do not edit.
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
/** Errors after which the client stops connecting (status `closed`) until `reconnect()`. */
export const TERMINAL_ERROR_KINDS = ["unauthorized", "forbidden", "not-found"];
/** Something went wrong; `kind` says what. Only `unauthorized`, `forbidden` and `not-found` stop the stream. */
export class FlowEventsError extends Error {
    kind;
    name = "FlowEventsError";
    status;
    mutationId;
    constructor(message, kind, options = {}) {
        super(message, "cause" in options ? { cause: options.cause } : undefined);
        this.kind = kind;
        if (options.status !== undefined)
            this.status = options.status;
        if (options.mutationId !== undefined)
            this.mutationId = options.mutationId;
    }
    /** True for the errors that end the stream (`status` becomes `closed`). */
    get terminal() {
        return TERMINAL_ERROR_KINDS.includes(this.kind);
    }
}
