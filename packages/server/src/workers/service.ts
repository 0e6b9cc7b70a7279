import type { Kysely } from "kysely";
import type { Caller } from "../auth/tokens.js";
import { AppError, workerNotFound } from "../errors.js";
import { newId } from "../ids.js";
import type { ChangeFeed } from "../store/changes.js";
import { ReadCache } from "../store/read-cache.js";
import type { Database, WorkerRow } from "../store/schema.js";
import * as workersStore from "../store/workers.js";
import type { UploadService, UploadTicket } from "./uploads.js";

export interface WorkerService {
  /** A new worker, and the upload its first source goes to. */
  create(caller: Caller, name: string, publicUrl: string): Promise<{ worker: WorkerRow; upload: UploadTicket }>;
  /** A new upload for an existing worker (UpdateWorker). */
  update(caller: Caller, workerId: string, publicUrl: string): Promise<UploadTicket>;
  list(caller: Caller): Promise<WorkerRow[]>;
  get(caller: Caller, workerId: string): Promise<WorkerRow>;
  /** Deletes the worker and everything it owns; returns the worker as it was. */
  delete(caller: Caller, workerId: string): Promise<WorkerRow>;
}

export const WORKER_NAME_MAX = 100;

export function validateWorkerName(name: string): string {
  const trimmed = name.trim();
  if (!trimmed) throw new AppError("validation_error", "A worker needs a name.", { hint: "Pass --name <name>." });
  if (trimmed.length > WORKER_NAME_MAX) {
    throw new AppError("validation_error", `A worker name is at most ${WORKER_NAME_MAX} characters.`);
  }
  return trimmed;
}

export function createWorkerService(options: {
  db: Kysely<Database>;
  /** Worker rows are kept in memory between requests; writes to them are told here (changes.ts). */
  changes: ChangeFeed;
  uploads: UploadService;
  /**
   * Called once a worker and everything it owns were deleted, by this server process or (heard on
   * the change feed) by another: stops its processes, drops caches.
   */
  onDeleted: (workerId: string) => void;
  now?: () => number;
}): WorkerService {
  const { db, uploads, changes } = options;
  const now = options.now ?? Date.now;
  const rows = new ReadCache<WorkerRow>(changes, "workers", (row) => row.id);
  changes.onChange((change) => {
    if (change.table === "workers" && change.gone && change.id) options.onDeleted(change.id);
  });

  async function get(caller: Caller, workerId: string): Promise<WorkerRow> {
    const row = await rows.get(`${caller.workspaceId}/${workerId}`, () => workersStore.findWorker(db, caller.workspaceId, workerId));
    if (!row) {
      // Deleted (through another server process, say): whatever this process still runs of it goes.
      if (!(await workersStore.findWorkerById(db, workerId))) options.onDeleted(workerId);
      throw workerNotFound(workerId);
    }
    return row;
  }

  return {
    async create(caller, name, publicUrl) {
      const at = now();
      const row: WorkerRow = {
        id: newId(),
        workspace_id: caller.workspaceId,
        name: validateWorkerName(name),
        created_at: at,
        updated_at: at,
        live_deployment_id: null,
        secrets_version: 0,
      };
      await workersStore.insertWorker(db, row);
      return { worker: row, upload: await uploads.issue(caller.workspaceId, row.id, publicUrl) };
    },

    async update(caller, workerId, publicUrl) {
      const row = await get(caller, workerId);
      return uploads.issue(caller.workspaceId, row.id, publicUrl);
    },

    async list(caller) {
      return workersStore.listWorkers(db, caller.workspaceId);
    },

    get,

    async delete(caller, workerId) {
      const row = await get(caller, workerId);
      // This process stops the worker's processes as it hears its own change, before answering.
      const deleted = await changes.transaction(db, async (trx, publish) => {
        const done = await workersStore.deleteWorkerCascade(trx, caller.workspaceId, workerId);
        if (done) publish({ table: "workers", id: workerId, gone: true }, { table: "webhooks", id: workerId });
        return done;
      });
      if (!deleted) throw workerNotFound(workerId);
      return row;
    },
  };
}
