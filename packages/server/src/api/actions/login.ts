import { defineAction, id, object } from "../action.js";

export const loginActions = [
  defineAction({
    name: "CliLoginInit",
    auth: "public",
    schema: object({}),
    async handle({ deps }) {
      return deps.login.init(deps.publicUrl());
    },
  }),
  defineAction({
    name: "CliLoginRedeem",
    auth: "public",
    schema: object({ sessionId: id }, ["sessionId"]),
    async handle({ deps, body }) {
      return deps.login.redeem(body.sessionId);
    },
  }),
];
