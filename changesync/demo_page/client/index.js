// Compiled from clients/typescript/src; written by `npm run build:demo-page`. Do not edit.
/**
 * @changesync/client: typed, resumable changesync event streams for the browser, with the flow's live state.
 */
export { DEFAULT_EVENT_TYPES, FlowEvents, } from "./flow-events.js";
export { DEFAULT_CANVAS_LAYOUT, canvasChange, itemChanges, } from "./canvas.js";
export { DEFAULT_LOG_EVENT_TYPES, FlowEventsError, clearData, documentKey, documentsOf, initialState, reduce, } from "./state.js";
export { JsonPatchError, applyPatch, jsonEqual, parsePointer } from "./json-patch.js";
