// Compiled from clients/typescript/src; written by `npm run build:demo-page`. Do not edit.
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
import { Backoff, HEALTHY_AFTER_MS, probeStatus, refusal, tokenWithin } from "./retry.js";
const CONNECTING = 0;
export class Connection {
    options;
    events;
    source = null;
    /** Bumped at every attempt: callbacks of older ones are ignored. */
    attempt = 0;
    opened = false;
    healthy = false;
    /** A 401 was answered with one more attempt (with a fresh token); the next 401 is final. */
    unauthorizedRetried = false;
    retryTimer = null;
    healthTimer = null;
    backoff;
    types = new Set();
    constructor(options, events, types) {
        this.options = options;
        this.events = events;
        this.backoff = new Backoff(options.reconnectDelayMs, options.maxReconnectDelayMs);
        for (const type of types)
            this.types.add(type);
    }
    /** Listens to `type` from now on, on the open stream too. */
    listen(type) {
        if (this.types.has(type))
            return;
        this.types.add(type);
        if (this.source !== null)
            this.listenOn(this.source, this.attempt, type);
    }
    /** Opens a new stream now, dropping the current one. */
    open() {
        void this.connect();
    }
    /** Forgets past failures: the next failure waits the base delay, a 401 gets its second chance again. */
    reset() {
        this.backoff.succeed();
        this.unauthorizedRetried = false;
    }
    /** The stream proved healthy (it delivered its SNAPSHOT): the backoff starts over. */
    markHealthy() {
        this.healthy = true;
        this.backoff.succeed();
    }
    /** Closes the stream and cancels the timers; callbacks of the attempt in flight are ignored from now on. */
    close() {
        this.attempt++;
        if (this.retryTimer !== null)
            clearTimeout(this.retryTimer);
        if (this.healthTimer !== null)
            clearTimeout(this.healthTimer);
        this.retryTimer = this.healthTimer = null;
        this.source?.close();
        this.source = null;
        this.opened = this.healthy = false;
    }
    async connect() {
        this.close();
        const attempt = this.attempt;
        const { getToken, withCredentials } = this.options;
        let token;
        if (getToken !== undefined) {
            try {
                token = await tokenWithin(getToken, this.options.tokenTimeoutMs);
            }
            catch (error) {
                if (attempt === this.attempt)
                    this.retryLater(error);
                return;
            }
            if (attempt !== this.attempt)
                return;
        }
        const url = this.events.url(token);
        const source = new this.options.EventSource(url, { withCredentials });
        this.source = source;
        source.addEventListener("open", () => {
            if (attempt === this.attempt)
                this.onOpen();
        });
        source.addEventListener("error", () => {
            if (attempt !== this.attempt)
                return;
            if (this.opened)
                this.onDrop(source);
            else
                void this.onRefused(source, url, attempt);
        });
        for (const type of this.types)
            this.listenOn(source, attempt, type);
    }
    listenOn(source, attempt, type) {
        source.addEventListener(type, (event) => {
            if (attempt === this.attempt)
                this.events.message(type, event);
        });
    }
    onOpen() {
        this.opened = true;
        this.unauthorizedRetried = false;
        this.healthTimer = setTimeout(() => {
            this.healthTimer = null;
            this.markHealthy();
        }, HEALTHY_AFTER_MS);
        this.events.opened();
    }
    /** The open stream failed. */
    onDrop(source) {
        const healthy = this.healthy;
        this.opened = this.healthy = false;
        if (this.healthTimer !== null)
            clearTimeout(this.healthTimer);
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
        if (this.source === source)
            this.source = null;
        this.events.failed("connecting", null);
        this.schedule();
    }
    /** The stream failed before it opened: the status of the same URL says whether to retry. */
    async onRefused(source, url, attempt) {
        source.close();
        if (this.source === source)
            this.source = null;
        const status = await probeStatus(this.options.fetch, url, this.options.withCredentials);
        if (attempt !== this.attempt)
            return;
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
    retryLater(error) {
        this.events.failed("error", error);
        this.schedule();
    }
    schedule() {
        if (this.retryTimer !== null)
            clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => {
            this.retryTimer = null;
            void this.connect();
        }, this.backoff.fail());
    }
}
