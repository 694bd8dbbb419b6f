/**
 * @changesync/publisher: typed publishing of events that are not database writes (log chunks, …) to changesync.
 */
export {
  DEFAULT_EVENT_TYPES,
  FLOW_ID_PATTERN,
  Publisher,
  type DefaultEventType,
  type EventType,
  type LogChunk,
  type PublishOptions,
  type Published,
  type PublisherOptions,
  type TokenSource,
} from "./publisher.js";
export { PublishError, RETRYABLE_STATUSES, type NoAnswer, type PublishErrorInit } from "./errors.js";
