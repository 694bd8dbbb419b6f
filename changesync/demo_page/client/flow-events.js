// Compiled from clients/typescript/src; written by `npm run build:demo-page`. Do not edit.
import { DEFAULT_CANVAS_LAYOUT, canvasChange } from "./canvas.js";
import { Connection } from "./connection.js";
import { documentKey } from "./documents.js";
import { FlowEventsError } from "./errors.js";
import { LocalWrites } from "./local-writes.js";
import { DEFAULT_EVENT_TYPES } from "./options.js";
import { DEFAULT_LOG_EVENT_TYPES, initialState, reduce } from "./state.js";
/** `on()` names that are this client's own events, never event types of the stream. */
const CLIENT_EVENTS = new Set(["state", "status", "error", "canvas", "open"]);
function report(error) {
    if (typeof globalThis.reportError === "function")
        globalThis.reportError(error);
    else
        setTimeout(() => { throw error; }, 0);
}
function positive(name, value, fallback, integer = false) {
    if (value === undefined)
        return fallback;
    if (!(value > 0) || (integer && !Number.isInteger(value))) {
        throw new RangeError(`${name} must be ${integer ? "an integer " : ""}> 0, got ${value}`);
    }
    return value;
}
/**
 * Subscribes to one flow. Connects at once (unless `connect: false`); call `close()` when done.
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
    /** Null without an `EventSource` (server-side rendering): the flow stays idle. */
    connection;
    started = false;
    closed = false;
    local;
    listeners = new Map();
    waiters = new Set();
    /** Bumped at every reset of the data (SNAPSHOT, non-resumable RESYNC): older refetches are dropped. */
    epoch = 0;
    /** Documents with a refetch in flight, and that refetch's number: only the latest one may apply. */
    refetching = new Map();
    reduceOptions;
    constructor(options) {
        this.options = options;
        const EventSource = options.EventSource ?? globalThis.EventSource;
        this.current = { ...initialState(options.flowId), lastEventId: options.lastEventId ?? null };
        this.reduceOptions = {
            logEventTypes: options.logEventTypes ?? DEFAULT_LOG_EVENT_TYPES,
            keepExecutions: positive("keepExecutions", options.keepExecutions, 5, true),
            logTextField: options.logTextField ?? "chunk",
            snapshots: options.snapshot !== false,
        };
        const tokenTimeoutMs = positive("tokenTimeoutMs", options.tokenTimeoutMs, 10_000);
        this.local = new LocalWrites(positive("pendingTimeoutMs", options.pendingTimeoutMs, 30_000), (id) => this.expire(id));
        const types = [...(options.types ?? DEFAULT_EVENT_TYPES), "SNAPSHOT", "RESYNC"];
        this.connection =
            EventSource === undefined
                ? null
                : new Connection({
                    EventSource,
                    getToken: options.getToken,
                    tokenTimeoutMs,
                    withCredentials: options.withCredentials ?? false,
                    fetch: options.fetch ?? globalThis.fetch,
                    reconnectDelayMs: options.reconnectDelayMs ?? 1000,
                    maxReconnectDelayMs: options.maxReconnectDelayMs ?? 30_000,
                }, {
                    url: (token) => this.url(token),
                    opened: () => this.onOpen(),
                    message: (type, event) => this.onMessage(type, event),
                    failed: (status, error) => this.onFailure(status, error),
                }, types);
        if (options.connect ?? true)
            this.start();
    }
    /** The flow's current state (a new object after every change). */
    get state() {
        return this.current;
    }
    get status() {
        return this.current.status;
    }
    /** Opens the stream, once (for `connect: false`); does nothing without an `EventSource` (server-side rendering). */
    start() {
        if (this.started || this.closed || this.connection === null)
            return;
        this.started = true;
        this.update({ ...this.current, status: "connecting" });
        this.connection.open();
    }
    on(type, listener) {
        let set = this.listeners.get(type);
        if (set === undefined)
            this.listeners.set(type, (set = new Set()));
        set.add(listener);
        if (!CLIENT_EVENTS.has(type))
            this.connection?.listen(type);
        return () => void set.delete(listener);
    }
    /**
     * Every payload from now on, in order, until `close()`. Each iterator buffers what it has not
     * consumed. A terminal error (`unauthorized`, `forbidden`, `not-found`) ends it by throwing that
     * error once the buffer is consumed; after `reconnect()`, iterate again.
     */
    [Symbol.asyncIterator]() {
        const waiter = { queue: [], wake: null, failure: null };
        this.waiters.add(waiter);
        const done = () => ({ done: true, value: undefined });
        return {
            next: async () => {
                while (waiter.queue.length === 0) {
                    if (this.closed || !this.waiters.has(waiter))
                        return done();
                    if (waiter.failure !== null) {
                        this.waiters.delete(waiter);
                        throw waiter.failure;
                    }
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
    /** Stops for good: closes the stream, cancels reconnection and local edits' timers, ends the iterators. */
    close() {
        if (this.closed)
            return;
        this.closed = true;
        this.connection?.close();
        this.local.clear();
        this.update({ ...this.current, status: "closed" });
        for (const waiter of this.waiters)
            waiter.wake?.();
    }
    /**
     * Drops the connection and opens a new one now, from the last event id, with the backoff reset:
     * e.g. after the user signed in again, also after a terminal error (`unauthorized`…).
     */
    reconnect() {
        if (this.closed || this.connection === null)
            return;
        this.started = true;
        this.connection.reset();
        this.update({ ...this.current, status: "connecting" });
        this.connection.open();
    }
    // --- local edits ------------------------------------------------------------------------------
    /**
     * Shows `edit` at once, before the server has it; returns its mutation id. Send your write with
     * that id at the service's origin field (`meta.mutationId` by default): its echo settles the edit.
     * Throws `JsonPatchError` when the patch does not apply to the document as shown.
     */
    applyLocal(edit) {
        if (this.closed)
            throw new Error("the flow is closed");
        const { id, state } = this.local.add(this.current, edit);
        this.update(state);
        return id;
    }
    /** Whether a document has local edits whose echo has not come back. */
    hasPendingWrites(collection, documentId) {
        return this.local.has(collection, documentKey(documentId));
    }
    /** Rolls back one pending local edit (e.g. the back end refused the write); false when it is not pending. */
    discardLocal(mutationId) {
        const rebased = this.local.discard(this.current, mutationId);
        if (rebased === null)
            return false;
        this.update(rebased.state);
        this.reportConflicts(rebased.conflicts);
        return true;
    }
    expire(mutationId) {
        if (!this.discardLocal(mutationId))
            return;
        this.emit("error", new FlowEventsError("a local edit was not confirmed in time", "pending-timeout", { mutationId }));
    }
    reportConflicts(ids) {
        for (const mutationId of ids) {
            this.emit("error", new FlowEventsError("a local edit no longer applies and was dropped", "conflict", { mutationId }));
        }
    }
    /** `payload` applied to the server's versions of the documents, with local edits replayed on top. */
    reduceWithLocal(state, payload) {
        let only;
        let origin;
        if (payload.type === "SNAPSHOT" || payload.type === "RESYNC") {
            const keepsData = payload.type === "RESYNC" && (payload.resumable || this.reduceOptions.snapshots);
            if (this.local.size === 0 || keepsData)
                return { state: reduce(state, payload, this.reduceOptions), conflicts: [] };
        }
        else {
            const data = payload;
            only = { collection: data.collection, key: documentKey(data.documentId) };
            if (data.operation === "skipped" || !this.local.has(only.collection, only.key)) {
                return { state: reduce(state, payload, this.reduceOptions), conflicts: [] };
            }
            origin = data.origin;
        }
        const reduced = reduce(this.local.withBases(state, only), payload, this.reduceOptions);
        return this.local.rebase(reduced, { only, origin, snapshot: payload.type === "SNAPSHOT" });
    }
    // --- the connection ---------------------------------------------------------------------------
    url(token) {
        const { baseUrl, flowId, types, snapshot, updates } = this.options;
        // After a RESYNC whose SNAPSHOT did not come on that stream: a fresh start, with one.
        const fresh = this.current.resyncing;
        const query = new URLSearchParams();
        if (types !== undefined)
            query.set("types", types.join(","));
        if (fresh)
            query.set("snapshot", "true");
        else if (snapshot !== undefined)
            query.set("snapshot", String(snapshot));
        if ((updates ?? "patch") === "patch")
            query.set("updates", "patch");
        if (!fresh && this.current.lastEventId)
            query.set("lastEventId", this.current.lastEventId);
        if (token !== undefined)
            query.set("access_token", token);
        const text = query.toString();
        return `${baseUrl.replace(/\/+$/, "")}/flows/${encodeURIComponent(flowId)}/events${text ? `?${text}` : ""}`;
    }
    onOpen() {
        const { lastEventId, snapshot } = this.options;
        // Resuming from a stored position, or without snapshots: no SNAPSHOT is coming to wait for.
        const loaded = this.current.loaded || (!this.current.resyncing && (lastEventId !== undefined || snapshot === false));
        this.update({ ...this.current, status: "live", error: null, loaded });
    }
    onFailure(status, error) {
        this.update({ ...this.current, status, error: error ?? this.current.error });
        if (error !== null)
            this.emit("error", error);
        if (error?.terminal) {
            for (const waiter of this.waiters) {
                waiter.failure = error;
                waiter.wake?.();
            }
        }
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
        const isData = payload.type !== "SNAPSHOT" && payload.type !== "RESYNC";
        // A RESYNC on a live stream (a reset) is not followed by a SNAPSHOT: start afresh to get one.
        const restart = isData && previous.resyncing;
        let { state: next, conflicts } = this.reduceWithLocal({ ...previous, lastEventId }, payload);
        if (payload.type === "SNAPSHOT" || (payload.type === "RESYNC" && !payload.resumable)) {
            this.epoch++;
            this.refetching.clear();
        }
        else if (isData) {
            next = this.track(payload, next);
        }
        if (payload.type === "SNAPSHOT")
            this.connection?.markHealthy();
        this.update(next, false);
        this.emit(type, payload);
        if (payload.type === "SYNC_CANVAS")
            this.emitCanvas(payload, previous, next);
        for (const waiter of this.waiters) {
            waiter.queue.push(payload);
            waiter.wake?.();
        }
        this.emit("state", this.current);
        this.reportConflicts(conflicts);
        if (restart && !this.closed && this.connection !== null) {
            this.update({ ...this.current, status: "connecting" });
            this.connection.open();
        }
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
        const { state, conflicts } = this.reduceWithLocal(this.current, replacement);
        this.update(state);
        if (type === "SYNC_CANVAS")
            this.emitCanvas(replacement, before, this.current);
        this.reportConflicts(conflicts);
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
