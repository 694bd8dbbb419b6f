/**
 * @changesync/client: typed, resumable changesync event streams for the browser, with the flow's live state.
 */
export {
  DEFAULT_EVENT_TYPES,
  FlowEvents,
  type DefaultEventType,
  type EventSourceConstructor,
  type EventSourceLike,
  type FlowEventMap,
  type FlowEventsOptions,
  type RefetchRequest,
} from "./flow-events.js";
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
  FlowEventsError,
  clearData,
  documentKey,
  documentsOf,
  initialState,
  reduce,
  type FlowErrorKind,
  type FlowState,
  type FlowStatus,
  type ReduceOptions,
} from "./state.js";
export { JsonPatchError, applyPatch, jsonEqual, parsePointer } from "./json-patch.js";
export type * from "./generated/events.js";
