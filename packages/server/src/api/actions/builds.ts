import type { BuildEvent } from "../../builder/service.js";
import { defineAction, id, object, text } from "../action.js";
import type { StreamLine } from "../contract.js";
import { outputLine, streamAnswer } from "../stream.js";

/** A build's event on the wire: its log, then a `result` or an `error` line. */
function buildLine(event: BuildEvent): StreamLine {
  switch (event.kind) {
    case "output":
      return outputLine(event);
    case "live":
      return { _tag: "result", result: { ok: true, deploymentId: event.deploymentId } };
    case "failed":
      return { _tag: "error", error: event.message, code: "build_failed" };
  }
}

export const buildActions = [
  defineAction({
    name: "BuildWorker",
    auth: "workspace",
    schema: object({ workerId: id, stream: { type: "boolean" } }, ["workerId"]),
    async handle({ caller, deps, body }) {
      if (body.stream !== false) return streamAnswer(await deps.builder.build(caller, body.workerId), buildLine);
      const { deploymentId } = await deps.builder.buildWhole(caller, body.workerId);
      return { ok: true, deploymentId };
    },
  }),
  defineAction({
    name: "ListCapabilities",
    auth: "workspace",
    schema: object({ workerId: id }, ["workerId"]),
    async handle({ caller, deps, body }) {
      return { capabilities: await deps.capabilities.list(caller, body.workerId) };
    },
  }),
  defineAction({
    name: "FetchAndSaveCapabilities",
    auth: "workspace",
    schema: object({ workerId: id }, ["workerId"]),
    async handle({ caller, deps, body }) {
      // The server read and saved the capabilities when it built the deployment.
      return { capabilities: await deps.builder.capabilities(caller, body.workerId) };
    },
  }),
  defineAction({
    name: "UpdateSyncCapabilityDisabled",
    auth: "workspace",
    schema: object({ workerId: id, capabilityKey: text(200), disabled: { type: "boolean" } }, [
      "workerId",
      "capabilityKey",
      "disabled",
    ]),
    async handle({ caller, deps, body }) {
      return { capability: await deps.builder.setSyncDisabled(caller, body.workerId, body.capabilityKey, body.disabled) };
    },
  }),
];
