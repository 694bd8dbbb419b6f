/**
 * @changesync/client: typed, resumable changesync event streams for the browser, with the flow's live state.
 */
export { FlowEvents } from "./flow-events.js";
export {
  DEFAULT_EVENT_TYPES,
  type DefaultEventType,
  type FlowEventMap,
  type FlowEventsOptions,
  type RefetchRequest,
} from "./options.js";
export { type EventSourceConstructor, type EventSourceLike } from "./connection.js";
export { HEALTHY_AFTER_MS, type FetchLike } from "./retry.js";
export { FlowEventsError, type FlowErrorKind, type FlowEventsErrorOptions } from "./errors.js";
export { type LocalEdit } from "./local-writes.js";
export { type LogText } from "./logs.js";
export {
  DEFAULT_CANVAS_LAYOUT,
  canvasChange,
  itemChanges,
  type CanvasChange,
  type CanvasLayout,
  type ItemChanges,
} from "./canvas.js";
export {
  DEFAULT_LOG_EVENT_TYPES,
  clearData,
  documentKey,
  documentsOf,
  initialState,
  reduce,
  type FlowState,
  type FlowStatus,
  type ReduceOptions,
} from "./state.js";
export { JsonPatchError, applyPatch, jsonEqual, parsePointer } from "./json-patch.js";
export type * from "./generated/events.js";
