import type { OutputLine } from "../line-queue.js";
import type { StreamLine } from "./contract.js";

/** A streamed answer: NDJSON lines, as BuildWorker and RunCapability send with `stream: true`. */
export interface StreamAnswer {
  stream: AsyncIterable<StreamLine>;
}

export function isStreamAnswer(value: unknown): value is StreamAnswer {
  return typeof value === "object" && value !== null && "stream" in value && Symbol.asyncIterator in (value as StreamAnswer).stream;
}

/** A concern's events as a streamed answer, each turned into its wire line as it comes. */
export function streamAnswer<E>(events: AsyncIterable<E>, toLine: (event: E) => StreamLine): StreamAnswer {
  return {
    stream: (async function* () {
      for await (const event of events) yield toLine(event);
    })(),
  };
}

/** A line a build or a run printed, on the wire. */
export function outputLine(line: OutputLine): StreamLine {
  return { _tag: "log", event: { stream: line.stream, data: line.data } };
}
