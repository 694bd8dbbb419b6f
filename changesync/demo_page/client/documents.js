// Compiled from clients/typescript/src; written by `npm run build:demo-page`. Do not edit.
/** The key of a document in `FlowState.collections`: string ids as they are, other ids as JSON. */
export function documentKey(id) {
    return typeof id === "string" ? id : JSON.stringify(id ?? null);
}
