import type { Kysely } from "kysely";
import { prepared } from "./prepared.js";
import type { Database, WorkerRow } from "./schema.js";

type Db = Kysely<Database>;

export async function insertWorker(db: Db, row: WorkerRow): Promise<void> {
  await db.insertInto("workers").values(row).execute();
}

const workerInWorkspace = prepared((db: Db, p: { workspaceId: string; workerId: string }) =>
  db.selectFrom("workers").selectAll().where("id", "=", p.workerId).where("workspace_id", "=", p.workspaceId),
);

/** Every read is scoped to the caller's workspace: another workspace's worker is simply absent. */
export async function findWorker(db: Db, workspaceId: string, workerId: string): Promise<WorkerRow | undefined> {
  return (await workerInWorkspace(db, { workspaceId, workerId }))[0];
}

export async function listWorkers(db: Db, workspaceId: string): Promise<WorkerRow[]> {
  return db
    .selectFrom("workers")
    .selectAll()
    .where("workspace_id", "=", workspaceId)
    .orderBy("created_at")
    .orderBy("id")
    .execute();
}

/** Records that the worker's secrets changed; returns the new version. */
export async function bumpSecretsVersion(db: Db, workerId: string, now: number): Promise<number> {
  await db
    .updateTable("workers")
    .set((eb) => ({ secrets_version: eb("secrets_version", "+", 1), updated_at: now }))
    .where("id", "=", workerId)
    .execute();
  const row = await db.selectFrom("workers").select("secrets_version").where("id", "=", workerId).executeTakeFirstOrThrow();
  return row.secrets_version;
}

/** Makes a ready deployment the live one: the only way a deployment goes live. */
export async function setLiveDeployment(db: Db, workerId: string, deploymentId: string, now: number): Promise<void> {
  await db.updateTable("workers").set({ live_deployment_id: deploymentId, updated_at: now }).where("id", "=", workerId).execute();
}

/** Deletes the worker and everything that belongs to it, in the caller's transaction. */
export async function deleteWorkerCascade(db: Db, workspaceId: string, workerId: string): Promise<boolean> {
  // Explicit deletes rather than relying on ON DELETE CASCADE, which SQLite only honours with
  // foreign_keys on; both engines then behave the same.
  await db.deleteFrom("webhook_deliveries").where("worker_id", "=", workerId).execute();
  await db.deleteFrom("webhooks").where("worker_id", "=", workerId).execute();
  await db.deleteFrom("secrets").where("worker_id", "=", workerId).execute();
  await db.deleteFrom("oauth_connections").where("worker_id", "=", workerId).execute();
  await db.deleteFrom("oauth_flows").where("worker_id", "=", workerId).execute();
  await db.deleteFrom("runs").where("worker_id", "=", workerId).execute();
  await db.deleteFrom("deployments").where("worker_id", "=", workerId).execute();
  await db.deleteFrom("uploads").where("worker_id", "=", workerId).execute();
  const result = await db
    .deleteFrom("workers")
    .where("id", "=", workerId)
    .where("workspace_id", "=", workspaceId)
    .executeTakeFirst();
  return Number(result.numDeletedRows) > 0;
}

/** Which of these worker ids still exist (in any workspace). */
export async function existingWorkerIds(db: Db, ids: string[]): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  const rows = await db.selectFrom("workers").select("id").where("id", "in", ids).execute();
  return new Set(rows.map((row) => row.id));
}

/** A worker by id alone: for the server's own background work, never for a request. */
export async function findWorkerById(db: Db, workerId: string): Promise<WorkerRow | undefined> {
  return db.selectFrom("workers").selectAll().where("id", "=", workerId).executeTakeFirst();
}
