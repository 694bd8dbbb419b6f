// Compiled by types.test.mjs against the built declarations: what a NestJS service would write.
import { PublishError, Publisher, type LogChunk, type Published } from "@changesync/publisher";

interface RunnerChunk extends LogChunk {
  readonly level: "info" | "error";
}

export async function emit(publisher: Publisher, chunk: RunnerChunk): Promise<string> {
  const published: Published = await publisher.logChunk("flow-1", chunk);
  await publisher.publish("flow-1", "EXECUTION_UPDATE", { status: "running" });
  await publisher.publish("flow-1", "MY_ROUTE_TYPE", { any: "shape" });
  await publisher.publish("flow-1", "SYNC_CANVAS", { kind: "note" }, { collection: "flow_nodes" });
  return published.id;
}

export function status(error: unknown): number | undefined {
  return error instanceof PublishError ? error.status : undefined;
}

export const fixed = new Publisher({ baseUrl: "http://changesync:8000", token: "t" });
export const fetched = new Publisher({ baseUrl: "http://changesync:8000", getToken: async () => "t", retries: 0 });
export const anonymous = new Publisher({ baseUrl: "http://changesync:8000" });

// @ts-expect-error: a fixed token or a token source, not both
export const both = new Publisher({ baseUrl: "x", token: "t", getToken: () => "t" });

export async function mistakes(publisher: Publisher): Promise<void> {
  // @ts-expect-error: a log chunk needs executionId, nodeId, seq and chunk
  await publisher.logChunk("flow-1", { chunk: "no ids" });
  // @ts-expect-error: seq is a number
  await publisher.logChunk("flow-1", { executionId: "r", nodeId: "n", seq: "1", chunk: "x" });
  // @ts-expect-error: data is an object
  await publisher.publish("flow-1", "LOG_STREAM", "text");
}
