import { defineAction, id, object } from "../action.js";

export const webhookActions = [
  defineAction({
    name: "ListWebhooks",
    auth: "workspace",
    schema: object({ workerId: id }, ["workerId"]),
    async handle({ caller, deps, body }) {
      return { webhooks: await deps.webhooks.list(caller, body.workerId) };
    },
  }),
];
