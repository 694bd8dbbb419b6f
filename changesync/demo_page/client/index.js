// Compiled from clients/typescript/src; written by `npm run build:demo-page`. Do not edit.
/**
 * @changesync/client: typed, resumable changesync event streams for the browser, with the flow's live state.
 */
export { FlowEvents } from "./flow-events.js";
export { DEFAULT_EVENT_TYPES, } from "./options.js";
export {} from "./connection.js";
export { HEALTHY_AFTER_MS } from "./retry.js";
export { FlowEventsError } from "./errors.js";
export {} from "./local-writes.js";
export {} from "./logs.js";
export { DEFAULT_CANVAS_LAYOUT, canvasChange, itemChanges, } from "./canvas.js";
export { DEFAULT_LOG_EVENT_TYPES, clearData, documentKey, documentsOf, initialState, reduce, } from "./state.js";
export { JsonPatchError, applyPatch, jsonEqual, parsePointer } from "./json-patch.js";
