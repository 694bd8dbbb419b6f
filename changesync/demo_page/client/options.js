// Compiled from clients/typescript/src; written by `npm run build:demo-page`. Do not edit.
/** The event types of changesync's default routes. */
export const DEFAULT_EVENT_TYPES = ["SYNC_CANVAS", "EXECUTION_UPDATE", "LOG_STREAM"];
