import { defineAction, id, object, text } from "../action.js";

const envEntry = object({ key: text(256), value: { type: "string" } }, ["key", "value"]);

export const secretActions = [
  defineAction({
    name: "UpsertSecrets",
    auth: "workspace",
    schema: object({ workerId: id, secrets: { type: "array", items: envEntry, maxItems: 500 } }, ["workerId", "secrets"]),
    async handle({ caller, deps, body }) {
      return deps.secrets.upsert(caller, body.workerId, body.secrets);
    },
  }),
  defineAction({
    name: "ListSecrets",
    auth: "workspace",
    schema: object({ workerId: id }, ["workerId"]),
    async handle({ caller, deps, body }) {
      const rows = await deps.secrets.list(caller, body.workerId);
      return { secrets: rows.map((row) => ({ key: row.name, createdAt: new Date(row.created_at).toISOString(), updatedAt: new Date(row.updated_at).toISOString() })) };
    },
  }),
  defineAction({
    name: "DeleteSecret",
    auth: "workspace",
    schema: object({ workerId: id, key: text(256) }, ["workerId", "key"]),
    async handle({ caller, deps, body }) {
      return deps.secrets.delete(caller, body.workerId, body.key);
    },
  }),
  defineAction({
    name: "PullEnv",
    auth: "workspace",
    schema: object({ workerId: id, refresh: { type: "boolean" } }, ["workerId"]),
    async handle({ caller, deps, body }) {
      return deps.secrets.pull(caller, body.workerId, { refresh: body.refresh === true });
    },
  }),
];
