import { defineAction, id, object, text } from "../action.js";

export const buildActions = [
  defineAction({
    name: "BuildWorker",
    auth: "workspace",
    schema: object({ workerId: id, stream: { type: "boolean" } }, ["workerId"]),
    async handle({ caller, deps, body }) {
      if (body.stream !== false) return { stream: await deps.builder.build(caller, body.workerId) };
      return deps.builder.buildWhole(caller, body.workerId);
    },
  }),
  defineAction({
    name: "ListCapabilities",
    auth: "workspace",
    schema: object({ workerId: id }, ["workerId"]),
    async handle({ caller, deps, body }) {
      return { capabilities: await deps.oauth.annotate(caller, body.workerId, await deps.builder.capabilities(caller, body.workerId)) };
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
