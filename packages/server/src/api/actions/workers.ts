import type { WorkerRow } from "../../store/schema.js";
import { defineAction, id, object, shortText } from "../action.js";
import type { WorkerView } from "../contract.js";

function workerView(row: WorkerRow): WorkerView {
  return {
    workerId: row.id,
    name: row.name,
    spaceId: row.workspace_id,
    createdAt: new Date(row.created_at).toISOString(),
    updatedAt: new Date(row.updated_at).toISOString(),
  };
}

export const workerActions = [
  defineAction({
    name: "ListWorkers",
    auth: "workspace",
    schema: object({}),
    async handle({ caller, deps }) {
      return { workers: (await deps.workers.list(caller)).map(workerView) };
    },
  }),
  defineAction({
    name: "CreateWorker",
    auth: "workspace",
    schema: object({ name: shortText, uploadType: shortText }, ["name"]),
    async handle({ caller, deps, body }) {
      const { worker, upload } = await deps.workers.create(caller, body.name, deps.publicUrl());
      return { worker: workerView(worker), ...upload };
    },
  }),
  defineAction({
    name: "UpdateWorker",
    auth: "workspace",
    schema: object({ workerId: id, uploadType: shortText }, ["workerId"]),
    async handle({ caller, deps, body }) {
      return deps.workers.update(caller, body.workerId, deps.publicUrl());
    },
  }),
  defineAction({
    name: "GetWorker",
    auth: "workspace",
    schema: object({ workerId: id }, ["workerId"]),
    async handle({ caller, deps, body }) {
      return { worker: workerView(await deps.workers.get(caller, body.workerId)) };
    },
  }),
  defineAction({
    name: "DeleteWorker",
    auth: "workspace",
    schema: object({ workerId: id }, ["workerId"]),
    async handle({ caller, deps, body }) {
      return { worker: workerView(await deps.workers.delete(caller, body.workerId)) };
    },
  }),
];
