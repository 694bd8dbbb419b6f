// Compiled from clients/typescript/src; written by `npm run build:demo-page`. Do not edit.
import { DEFAULT_CANVAS_LAYOUT, canvasChange } from "./canvas.js";
import { DEFAULT_LOG_EVENT_TYPES, FlowEventsError, documentKey, initialState, reduce, } from "./state.js";
/** The event types of changesync's default routes. */
export const DEFAULT_EVENT_TYPES = ["SYNC_CANVAS", "EXECUTION_UPDATE", "LOG_STREAM"];
const CONNECTING = 0;
const CLOSED = 2;
function report(error) {
    if (typeof globalThis.reportError === "function")
        globalThis.reportError(error);
    else
        setTimeout(() => { throw error; }, 0);
}
/**
 * Subscribes to one flow. Connects at once; call `close()` when done.
 *
 * ```ts
 * const flow = new FlowEvents({ baseUrl, flowId, getToken: () => api.changesyncToken() });
 * flow.on("state", (state) => render(state));
 * for await (const payload of flow) console.log(payload.type);
 * ```
 */
export class FlowEvents {
    options;
    current;
    source = null;
    connection = 0;
    failures = 0;
    opened = false;
    timer = null;
    closed = false;
    listeners = new Map();
    waiters = new Set();
    /** Bumped at every reset of the data (SNAPSHOT, non-resumable RESYNC): older refetches are dropped. */
    epoch = 0;
    /** Documents with a refetch in flight, and that refetch's number: only the latest one may apply. */
    refetching = new Map();
    eventTypes;
    logEventTypes;
    EventSourceImpl;
    constructor(options) {
        this.options = options;
        const implementation = options.EventSource ?? globalThis.EventSource;
        if (implementation === undefined)
            throw new TypeError("no EventSource here: pass options.EventSource");
        this.EventSourceImpl = implementation;
        this.current = { ...initialState(options.flowId), lastEventId: options.lastEventId ?? null };
        this.eventTypes = [...new Set([...(options.types ?? DEFAULT_EVENT_TYPES), "SNAPSHOT", "RESYNC"])];
        this.logEventTypes = options.logEventTypes ?? DEFAULT_LOG_EVENT_TYPES;
        void this.connect();
    }
    /** The flow's current state (a new object after every change). */
    get state() {
        return this.current;
    }
    get status() {
        return this.current.status;
    }
    on(type, listener) {
        let set = this.listeners.get(type);
        if (set === undefined)
            this.listeners.set(type, (set = new Set()));
        set.add(listener);
        return () => void set.delete(listener);
    }
    /** Every payload from now on, in order, until `close()`. Each iterator buffers what it has not consumed. */
    [Symbol.asyncIterator]() {
        const waiter = { queue: [], wake: null };
        this.waiters.add(waiter);
        const done = () => ({ done: true, value: undefined });
        return {
            next: async () => {
                while (waiter.queue.length === 0) {
                    if (this.closed || !this.waiters.has(waiter))
                        return done();
                    await new Promise((resolve) => (waiter.wake = resolve));
                    waiter.wake = null;
                }
                return { done: false, value: waiter.queue.shift() };
            },
            return: async () => {
                this.waiters.delete(waiter);
                waiter.wake?.();
                return done();
            },
        };
    }
    /** Stops for good: closes the stream, cancels reconnection, ends the iterators. */
    close() {
        if (this.closed)
            return;
        this.closed = true;
        this.connection++;
        if (this.timer !== null)
            clearTimeout(this.timer);
        this.source?.close();
        this.source = null;
        for (const waiter of this.waiters)
            waiter.wake?.();
    }
    /** Drops the connection and opens a new one now, from the last event id (e.g. after the user signed in again). */
    reconnect() {
        if (this.closed)
            return;
        if (this.timer !== null)
            clearTimeout(this.timer);
        this.timer = null;
        if (this.current.status === "live")
            this.update({ ...this.current, status: "connecting" });
        void this.connect();
    }
    // --- the connection ---------------------------------------------------------------------------
    url(token) {
        const { baseUrl, flowId, types, snapshot, updates } = this.options;
        const query = new URLSearchParams();
        if (types !== undefined)
            query.set("types", types.join(","));
        if (snapshot !== undefined)
            query.set("snapshot", String(snapshot));
        if ((updates ?? "patch") === "patch")
            query.set("updates", "patch");
        if (this.current.lastEventId)
            query.set("lastEventId", this.current.lastEventId);
        if (token !== undefined)
            query.set("access_token", token);
        const text = query.toString();
        return `${baseUrl.replace(/\/+$/, "")}/flows/${encodeURIComponent(flowId)}/events${text ? `?${text}` : ""}`;
    }
    async connect() {
        const connection = ++this.connection;
        this.source?.close();
        this.source = null;
        this.opened = false;
        let token;
        if (this.options.getToken !== undefined) {
            try {
                token = await this.options.getToken();
            }
            catch (cause) {
                if (connection !== this.connection)
                    return;
                this.fail(new FlowEventsError("could not get a token", "token", { cause }));
                return;
            }
            if (connection !== this.connection)
                return;
        }
        const source = new this.EventSourceImpl(this.url(token), { withCredentials: this.options.withCredentials ?? false });
        this.source = source;
        source.addEventListener("open", () => {
            if (connection !== this.connection)
                return;
            this.opened = true;
            this.failures = 0;
            this.update({ ...this.current, status: "live", error: null });
        });
        source.addEventListener("error", () => {
            if (connection === this.connection)
                this.onError(source);
        });
        for (const type of this.eventTypes) {
            source.addEventListener(type, (event) => {
                if (connection === this.connection)
                    this.onMessage(type, event);
            });
        }
    }
    onError(source) {
        const wasOpen = this.opened;
        this.opened = false;
        // Cookie mode: while the browser reconnects by itself (with Last-Event-ID), let it.
        if (this.options.getToken === undefined && source.readyState === CONNECTING) {
            if (wasOpen)
                this.update({ ...this.current, status: "connecting" });
            else
                this.fail(new FlowEventsError("could not connect; retrying", "connect"), false);
            return;
        }
        // Token mode (the URL's token may have expired), or the browser gave up (readyState CLOSED):
        // a new EventSource, with a fresh token and ?lastEventId=.
        source.close();
        if (this.source === source)
            this.source = null;
        if (wasOpen) {
            this.update({ ...this.current, status: "connecting" });
            this.schedule();
        }
        else {
            this.fail(new FlowEventsError("could not connect; retrying", "connect"));
        }
    }
    /** Reports `error`, sets status `error`, and (unless the browser retries by itself) schedules a retry. */
    fail(error, retry = true) {
        this.failures++;
        this.update({ ...this.current, status: "error", error });
        this.emit("error", error);
        if (retry)
            this.schedule();
    }
    schedule() {
        if (this.closed)
            return;
        if (this.timer !== null)
            clearTimeout(this.timer);
        const base = this.options.reconnectDelayMs ?? 1000;
        const max = this.options.maxReconnectDelayMs ?? 30_000;
        const delay = Math.min(max, base * 2 ** Math.max(0, this.failures - 1));
        // Jitter (50–100 %): clients of a restarted server do not all come back at once.
        this.timer = setTimeout(() => {
            this.timer = null;
            void this.connect();
        }, delay * (0.5 + Math.random() / 2));
    }
    // --- events -----------------------------------------------------------------------------------
    onMessage(type, event) {
        let payload;
        try {
            payload = JSON.parse(event.data);
        }
        catch (cause) {
            this.emit("error", new FlowEventsError(`a ${type} event is not JSON`, "parse", { cause }));
            return;
        }
        const lastEventId = event.lastEventId || this.current.lastEventId;
        const previous = this.current;
        let next = reduce({ ...this.current, lastEventId }, payload, { logEventTypes: this.logEventTypes });
        if (payload.type === "SNAPSHOT" || (payload.type === "RESYNC" && !payload.resumable)) {
            this.epoch++;
            this.refetching.clear();
        }
        else if (payload.type !== "RESYNC") {
            next = this.track(payload, next);
        }
        this.update(next, false);
        this.emit(type, payload);
        if (payload.type === "SYNC_CANVAS")
            this.emitCanvas(payload, previous, next);
        for (const waiter of this.waiters) {
            waiter.queue.push(payload);
            waiter.wake?.();
        }
        this.emit("state", this.current);
    }
    /** Starts a refetch when the event left its document without a known version; supersedes older ones. */
    track(payload, state) {
        if (payload.operation === "skipped")
            return state;
        const key = documentKey(payload.documentId);
        const id = `${payload.collection}\u0000${key}`;
        const previous = this.refetching.get(id);
        // An in-flight refetch may return an older version than this event's: it must not apply.
        this.refetching.delete(id);
        const missing = payload.operation !== "delete" && (state.stale[payload.collection]?.includes(key) ?? false);
        if (missing && this.options.refetch !== undefined) {
            const number = (previous ?? 0) + 1;
            this.refetching.set(id, number);
            void this.refetch(payload, id, number);
        }
        return state;
    }
    async refetch(payload, id, number) {
        const epoch = this.epoch;
        const refetch = this.options.refetch;
        let document;
        try {
            document = await refetch({
                flowId: this.options.flowId,
                collection: payload.collection,
                documentId: payload.documentId,
                type: payload.type,
                payload,
            });
        }
        catch (cause) {
            if (this.refetching.get(id) === number)
                this.refetching.delete(id);
            this.emit("error", new FlowEventsError(`could not refetch a ${payload.collection} document`, "refetch", { cause }));
            return;
        }
        // A later event (or a reset) already decided this document's state: the fetched copy may be older.
        if (this.closed || epoch !== this.epoch || this.refetching.get(id) !== number)
            return;
        this.refetching.delete(id);
        const { type, flowId, collection, clusterTime, wallTime } = payload;
        const replacement = {
            type,
            flowId,
            collection,
            clusterTime,
            wallTime,
            operation: document === null ? "delete" : "replace",
            documentId: payload.documentId,
            document,
            patch: null,
        };
        const before = this.current;
        this.update(reduce(this.current, replacement, { logEventTypes: this.logEventTypes }));
        if (type === "SYNC_CANVAS")
            this.emitCanvas(replacement, before, this.current);
    }
    /** The `canvas` event: what `payload` did to the nodes and edges, from the document before and after it. */
    emitCanvas(payload, before, after) {
        if (payload.operation === "skipped" || !this.listeners.get("canvas")?.size)
            return;
        const key = documentKey(payload.documentId);
        const { collection } = payload;
        const change = canvasChange(collection, payload.documentId, payload.operation, before.collections[collection]?.[key], after.collections[collection]?.[key], this.options.canvasLayout ?? DEFAULT_CANVAS_LAYOUT, after.stale[collection]?.includes(key) ?? false);
        this.emit("canvas", change);
    }
    update(state, notify = true) {
        const statusChanged = state.status !== this.current.status;
        this.current = state;
        if (statusChanged)
            this.emit("status", state.status);
        if (notify)
            this.emit("state", state);
    }
    emit(type, value) {
        const set = this.listeners.get(type);
        if (set === undefined)
            return;
        for (const listener of [...set]) {
            try {
                listener(value);
            }
            catch (error) {
                report(error);
            }
        }
    }
}
