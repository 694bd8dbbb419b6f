// Compiled from clients/typescript/src; written by `npm run build:demo-page`. Do not edit.
import { documentKey } from "./documents.js";
import { applyPatch, jsonEqual } from "./json-patch.js";
import { setDocument } from "./state.js";
let fallbackCounter = 0;
/** A fresh mutation id: a random UUID (`crypto.randomUUID` needs a secure context; other pages get the same format). */
export function mutationId() {
    const crypto = globalThis.crypto;
    if (typeof crypto?.randomUUID === "function")
        return crypto.randomUUID();
    const bytes = new Uint8Array(16);
    if (typeof crypto?.getRandomValues === "function")
        crypto.getRandomValues(bytes);
    else
        for (let i = 0; i < 16; i++)
            bytes[i] = Math.floor(Math.random() * 256);
    bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    // Within one page, ids never repeat even if the random source is poor.
    bytes[15] = (bytes[15] + fallbackCounter++) & 0xff;
    const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
const place = (collection, key) => `${collection}\u0000${key}`;
export class LocalWrites {
    timeoutMs;
    onExpired;
    documents = new Map();
    owners = new Map();
    constructor(timeoutMs, onExpired) {
        this.timeoutMs = timeoutMs;
        this.onExpired = onExpired;
    }
    /** How many edits are pending, over all documents. */
    get size() {
        return this.owners.size;
    }
    /** Whether a document (by `documentKey`) has pending edits. */
    has(collection, key) {
        return this.documents.has(place(collection, key));
    }
    /**
     * Applies `edit` on top of what `state` shows and records it; returns its mutation id and the new
     * state. Throws `JsonPatchError`, recording nothing, when the patch does not apply.
     */
    add(state, edit) {
        const key = documentKey(edit.documentId);
        const shown = state.collections[edit.collection]?.[key];
        const visible = applyPatch(shown, edit.patch);
        const id = mutationId();
        const name = place(edit.collection, key);
        let pending = this.documents.get(name);
        if (pending === undefined) {
            pending = { collection: edit.collection, key, base: shown, edits: [] };
            this.documents.set(name, pending);
        }
        const timer = setTimeout(() => this.onExpired(id), this.timeoutMs);
        pending.edits.push({ id, patch: edit.patch, timer });
        this.owners.set(id, pending);
        return { id, state: this.counted(setDocument(state, edit.collection, key, visible ?? null)) };
    }
    /** `state` with the base in place of what is shown, for one document (or all): what server events apply to. */
    withBases(state, only) {
        for (const pending of this.targets(only)) {
            state = setDocument(state, pending.collection, pending.key, pending.base ?? null);
        }
        return state;
    }
    /**
     * After a server event was applied to `withBases(state)`: takes each document's version in `state`
     * as its new base, settles the edits `origin` confirms, and replays the others on the base.
     * `snapshot`: the event was a SNAPSHOT, which carries no origin (see the module docs).
     */
    rebase(state, options = {}) {
        const conflicts = [];
        for (const pending of this.targets(options.only)) {
            pending.base = state.collections[pending.collection]?.[pending.key];
            const owner = options.origin === undefined ? undefined : this.owners.get(options.origin);
            let settled = owner === pending ? pending.edits.findIndex((edit) => edit.id === options.origin) : -1;
            if (options.snapshot)
                settled = Math.max(settled, this.reflected(pending));
            for (const edit of pending.edits.splice(0, settled + 1))
                this.forget(edit);
            state = this.replay(state, pending, conflicts);
        }
        return { state: this.counted(state), conflicts };
    }
    /** Drops one pending edit (its write failed, or its echo never came); returns null when it is not pending. */
    discard(state, id) {
        const pending = this.owners.get(id);
        if (pending === undefined)
            return null;
        const index = pending.edits.findIndex((edit) => edit.id === id);
        for (const edit of pending.edits.splice(index, 1))
            this.forget(edit);
        const conflicts = [];
        return { state: this.counted(this.replay(state, pending, conflicts)), conflicts };
    }
    /** Forgets every edit (on `close()`). */
    clear() {
        for (const pending of this.documents.values())
            for (const edit of pending.edits)
                this.forget(edit);
        this.documents.clear();
    }
    *targets(only) {
        if (only === undefined) {
            yield* [...this.documents.values()];
            return;
        }
        const pending = this.documents.get(place(only.collection, only.key));
        if (pending !== undefined)
            yield pending;
    }
    /** The newest edit whose effect the base already shows, or -1. */
    reflected(pending) {
        for (let index = pending.edits.length - 1; index >= 0; index--) {
            try {
                if (jsonEqual(applyPatch(pending.base, pending.edits[index].patch), pending.base))
                    return index;
            }
            catch {
                // does not apply to the base: not reflected
            }
        }
        return -1;
    }
    /** Shows the base with the remaining edits replayed; drops (into `conflicts`) those that no longer apply. */
    replay(state, pending, conflicts) {
        let visible = pending.base;
        const kept = [];
        for (const edit of pending.edits) {
            try {
                visible = applyPatch(visible, edit.patch);
                kept.push(edit);
            }
            catch {
                this.forget(edit);
                conflicts.push(edit.id);
            }
        }
        pending.edits = kept;
        if (kept.length === 0)
            this.documents.delete(place(pending.collection, pending.key));
        return setDocument(state, pending.collection, pending.key, visible ?? null);
    }
    forget(edit) {
        clearTimeout(edit.timer);
        this.owners.delete(edit.id);
    }
    counted(state) {
        return state.pendingWrites === this.size ? state : { ...state, pendingWrites: this.size };
    }
}
