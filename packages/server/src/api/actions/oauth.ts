import { defineAction, id, object, text } from "../action.js";

const capabilityKey = text(200, 1);

export const oauthActions = [
  defineAction({
    name: "StartOauth",
    auth: "workspace",
    schema: object({ workerId: id, oauthCapabilityKey: capabilityKey }, ["workerId", "oauthCapabilityKey"]),
    async handle({ caller, deps, body }) {
      return deps.oauth.start(caller, body.workerId, body.oauthCapabilityKey);
    },
  }),
  defineAction({
    name: "GetOauthFlow",
    auth: "workspace",
    schema: object({ workerId: id, state: text(200, 1), waitMs: { type: "integer", minimum: 0 } }, [
      "workerId",
      "state",
    ]),
    async handle({ caller, deps, body }) {
      return deps.oauth.flowStatus(caller, body.workerId, body.state, body.waitMs);
    },
  }),
  defineAction({
    name: "GetOauthToken",
    auth: "workspace",
    schema: object({ workerId: id, oauthCapabilityKey: capabilityKey, refresh: { type: "boolean" } }, ["workerId", "oauthCapabilityKey"]),
    async handle({ caller, deps, body }) {
      return deps.oauth.token(caller, body.workerId, body.oauthCapabilityKey, { refresh: body.refresh === true });
    },
  }),
  defineAction({
    name: "GetOauthStatus",
    auth: "workspace",
    schema: object({ workerId: id, oauthCapabilityKey: capabilityKey }, ["workerId"]),
    async handle({ caller, deps, body }) {
      return { connections: await deps.oauth.status(caller, body.workerId, body.oauthCapabilityKey) };
    },
  }),
  defineAction({
    name: "RevokeOauth",
    auth: "workspace",
    schema: object({ workerId: id, oauthCapabilityKey: capabilityKey }, ["workerId", "oauthCapabilityKey"]),
    async handle({ caller, deps, body }) {
      return deps.oauth.revoke(caller, body.workerId, body.oauthCapabilityKey);
    },
  }),
];
