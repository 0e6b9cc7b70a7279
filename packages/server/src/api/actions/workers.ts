import { defineAction, id, object, shortText } from "../action.js";
import { workerView } from "../../workers/service.js";

export const workerActions = [
  defineAction({
    name: "ListWorkers",
    auth: "workspace",
    schema: object({}),
    async handle({ caller, deps }) {
      return { workers: await deps.workers.list(caller) };
    },
  }),
  defineAction({
    name: "CreateWorker",
    auth: "workspace",
    schema: object({ name: shortText, uploadType: shortText }, ["name"]),
    async handle({ caller, deps, body }) {
      return deps.workers.create(caller, body.name, deps.publicUrl());
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
      return { worker: await deps.workers.delete(caller, body.workerId) };
    },
  }),
];
