import { defineAction, id, object, text } from "../action.js";

const key = text(200, 1);

export const webhookActions = [
  defineAction({
    name: "ListWebhooks",
    auth: "workspace",
    schema: object({ workerId: id }, ["workerId"]),
    async handle({ caller, deps, body }) {
      return { webhooks: await deps.webhooks.list(caller, body.workerId) };
    },
  }),
  defineAction({
    name: "ListWebhookDeliveries",
    auth: "workspace",
    schema: object({ workerId: id, key }, ["workerId", "key"]),
    async handle({ caller, deps, body }) {
      return { deliveries: await deps.webhooks.deliveries(caller, body.workerId, body.key) };
    },
  }),
  defineAction({
    name: "RedeliverWebhook",
    auth: "workspace",
    schema: object({ workerId: id, deliveryId: id }, ["workerId", "deliveryId"]),
    async handle({ caller, deps, body }) {
      await deps.webhooks.redeliver(caller, body.workerId, body.deliveryId);
      return {};
    },
  }),
  defineAction({
    name: "RotateWebhook",
    auth: "workspace",
    schema: object({ workerId: id, key }, ["workerId", "key"]),
    async handle({ caller, deps, body }) {
      return { url: await deps.webhooks.rotate(caller, body.workerId, body.key) };
    },
  }),
  defineAction({
    name: "UnblockWebhook",
    auth: "workspace",
    schema: object({ workerId: id, key }, ["workerId", "key"]),
    async handle({ caller, deps, body }) {
      await deps.webhooks.unblock(caller, body.workerId, body.key);
      return {};
    },
  }),
  defineAction({
    name: "SetWebhookVerification",
    auth: "workspace",
    schema: object({ workerId: id, key, enabled: { type: "boolean" } }, ["workerId", "key", "enabled"]),
    async handle({ caller, deps, body }) {
      await deps.webhooks.setVerification(caller, body.workerId, body.key, body.enabled);
      return {};
    },
  }),
];
