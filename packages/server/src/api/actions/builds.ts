import { AppError } from "../../errors.js";
import { defineAction, id, object, text } from "../action.js";

export const buildActions = [
  defineAction({
    name: "BuildWorker",
    auth: "workspace",
    schema: object({ workerId: id, stream: { type: "boolean" } }, ["workerId"]),
    async handle({ caller, deps, body }) {
      const lines = await deps.builder.build(caller, body.workerId);
      if (body.stream !== false) return { stream: lines };
      // Without streaming: wait for the outcome and answer it whole.
      let deploymentId: string | undefined;
      let failure: string | undefined;
      for await (const line of lines) {
        if (line._tag === "result") deploymentId = (line.result as { deploymentId?: string }).deploymentId;
        if (line._tag === "error") failure = line.error;
      }
      if (!deploymentId) throw new AppError("build_failed", failure ?? "The build failed.");
      return { ok: true as const, deploymentId };
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
      const capabilities = await deps.builder.capabilities(caller, body.workerId);
      const capability = capabilities.find((c) => c.key === body.capabilityKey);
      if (!capability) {
        throw new AppError("capability_not_found", `The worker has no capability ${JSON.stringify(body.capabilityKey)}.`, {
          hint: "Run `ntn workers capabilities list` to see its capabilities.",
        });
      }
      throw new AppError("capability_not_supported", `${capability._tag} capabilities do not run on this server yet, so there is nothing to enable or disable.`);
    },
  }),
];
