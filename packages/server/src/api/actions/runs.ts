import { defineAction, id, object, text } from "../action.js";

export const runActions = [
  defineAction({
    name: "RunCapability",
    auth: "workspace",
    schema: object({ workerId: id, capabilityKey: text(200, 1), stream: { type: "boolean" } }, [
      "workerId",
      "capabilityKey",
    ]),
    async handle({ caller, deps, body }) {
      return deps.runs.run(caller, body);
    },
  }),
  defineAction({
    name: "ListRunsForWorker",
    auth: "workspace",
    schema: object({ workerId: id }, ["workerId"]),
    async handle({ caller, deps, body }) {
      return { runs: await deps.runs.list(caller, body.workerId) };
    },
  }),
  defineAction({
    name: "GetRunLogs",
    auth: "workspace",
    schema: object({ workerId: id, runId: id }, ["workerId", "runId"]),
    async handle({ caller, deps, body }) {
      return deps.runs.logs(caller, body.workerId, body.runId);
    },
  }),
];
