/**
 * How documents are keyed in the flow's state.
 */
import type { DocumentId } from "./generated/events.js";

/** A read-only record by string key. */
export type Table<T> = Readonly<Record<string, T>>;

/** The key of a document in `FlowState.collections`: string ids as they are, other ids as JSON. */
export function documentKey(id: DocumentId | null | undefined): string {
  return typeof id === "string" ? id : JSON.stringify(id ?? null);
}
