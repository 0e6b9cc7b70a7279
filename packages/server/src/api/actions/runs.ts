import type { RunEvent } from "../../runs/service.js";
import type { RunSummary } from "../../store/runs.js";
import { defineAction, id, isoTime, object, text } from "../action.js";
import type { RunView, StreamLine } from "../contract.js";
import { outputLine, streamAnswer } from "../stream.js";

function runView(row: RunSummary): RunView {
  return {
    workerId: row.worker_id,
    spaceId: row.workspace_id,
    runId: row.id,
    name: row.capability_key,
    exitCode: row.exit_code,
    startedAt: new Date(row.started_at).toISOString(),
    endedAt: isoTime(row.ended_at),
    status: row.status,
    durationMs: row.duration_ms,
    error: row.error,
    ...(row.delivery_id ? { deliveryId: row.delivery_id } : {}),
  };
}

/** A run's event on the wire: its id, its output, then a `result` or an `error` line. */
function runLine(event: RunEvent): StreamLine {
  switch (event.kind) {
    case "started":
      return { _tag: "run", runId: event.runId };
    case "output":
      return outputLine(event);
    case "succeeded":
      return { _tag: "result", result: event.result, runId: event.runId };
    case "failed":
      return { _tag: "error", error: event.message, code: "run_failed", runId: event.runId };
  }
}

export const runActions = [
  defineAction({
    name: "RunCapability",
    auth: "workspace",
    schema: object({ workerId: id, capabilityKey: text(200, 1), stream: { type: "boolean" } }, [
      "workerId",
      "capabilityKey",
    ]),
    async handle({ caller, deps, body }) {
      const request = { workerId: body.workerId, capabilityKey: body.capabilityKey, args: body.args };
      if (body.stream) return streamAnswer(await deps.runs.stream(caller, request), runLine);
      return deps.runs.run(caller, request);
    },
  }),
  defineAction({
    name: "ListRunsForWorker",
    auth: "workspace",
    schema: object({ workerId: id }, ["workerId"]),
    async handle({ caller, deps, body }) {
      return { runs: (await deps.runs.list(caller, body.workerId)).map(runView) };
    },
  }),
  defineAction({
    name: "GetRunLogs",
    auth: "workspace",
    schema: object({ workerId: id, runId: id }, ["workerId", "runId"]),
    async handle({ caller, deps, body }) {
      const { logs, run } = await deps.runs.logs(caller, body.workerId, body.runId);
      return { logs, run: runView(run) };
    },
  }),
];
