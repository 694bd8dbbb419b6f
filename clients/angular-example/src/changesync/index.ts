/** The changesync integration for Angular: copy this folder into an app that depends on `@changesync/client`. */
export { CHANGESYNC_CONFIG, type ChangesyncConfig, httpToken, provideChangesync } from "./config";
export { FlowEventsService } from "./flow-events.service";
export { BOARD_COLLECTION, type Canvas, EMPTY_CANVAS, EXECUTION_COLLECTION, type FlowLogText } from "./flow-view";
