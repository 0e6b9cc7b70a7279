import { redirectUriFor } from "../../oauth/settings.js";
import { defineAction, object, text } from "../action.js";

export const serverActions = [
  defineAction({
    name: "WhoAmI",
    auth: "workspace",
    schema: object({}),
    async handle({ caller, deps }) {
      return {
        workspaceId: caller.workspaceId,
        workspaceName: caller.workspaceName,
        tokenId: caller.tokenId,
        tokenName: caller.tokenName,
        role: caller.role,
        publicUrl: deps.publicUrl(),
      };
    },
  }),
  defineAction({
    name: "GetServerInfo",
    auth: "public",
    schema: object({}),
    async handle({ deps }) {
      return { publicUrl: deps.publicUrl(), redirectUrl: redirectUriFor(deps.publicUrl()), version: deps.version };
    },
  }),
  defineAction({
    name: "CreateWorkspace",
    auth: "admin",
    schema: object({ name: text(200, 1) }, ["name"]),
    async handle({ deps, body }) {
      const { workspace, token } = await deps.workspaces.create(body.name);
      return { workspaceId: workspace.id, name: workspace.name, token };
    },
  }),
  defineAction({
    name: "RotateKey",
    auth: "admin",
    schema: object({ keepOldKeys: { type: "boolean" } }),
    async handle({ deps, body }) {
      const report = await deps.keys.rotate({ keepOldKeys: body.keepOldKeys === true });
      return { keyId: report.keyId, resealed: report.resealed, source: report.source, removedKeyIds: report.removedKeyIds };
    },
  }),
];
