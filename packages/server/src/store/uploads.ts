import type { Kysely } from "kysely";
import type { Database, UploadRow } from "./schema.js";

type Db = Kysely<Database>;

export async function insertUpload(db: Db, row: UploadRow): Promise<void> {
  await db.insertInto("uploads").values(row).execute();
}

export async function findUpload(db: Db, id: string): Promise<Omit<UploadRow, "archive"> | undefined> {
  return db
    .selectFrom("uploads")
    .select(["id", "workspace_id", "worker_id", "created_at", "expires_at", "received_at", "archive_key_id", "archive_size", "built_at"])
    .where("id", "=", id)
    .executeTakeFirst();
}

/** An upload's archive as stored, with what its associated data names; `archive_key_id` null: in clear. */
export type StoredArchive = Pick<UploadRow, "id" | "workspace_id" | "worker_id" | "archive" | "archive_key_id">;

/**
 * Stores the sealed archive if the upload is still unused: the compare-and-set on `received_at`
 * makes the issued fields single-use even when two requests race with them. `size` is the
 * archive's size as sent.
 */
export async function receiveUpload(db: Db, id: string, archive: { keyId: string; sealed: Buffer; size: number }, now: number): Promise<boolean> {
  const result = await db
    .updateTable("uploads")
    .set({ archive: archive.sealed, archive_key_id: archive.keyId, archive_size: archive.size, received_at: now })
    .where("id", "=", id)
    .where("received_at", "is", null)
    .where("expires_at", ">", now)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

/** The newest received upload of a worker that no build has taken yet. */
export async function latestUnbuiltUpload(db: Db, workerId: string): Promise<UploadRow | undefined> {
  return db
    .selectFrom("uploads")
    .selectAll()
    .where("worker_id", "=", workerId)
    .where("received_at", "is not", null)
    .where("built_at", "is", null)
    .orderBy("received_at", "desc")
    .limit(1)
    .executeTakeFirst();
}

/** Claims an upload for a build; false if another build took it first. */
export async function claimUploadForBuild(db: Db, id: string, now: number): Promise<boolean> {
  const result = await db
    .updateTable("uploads")
    .set({ built_at: now })
    .where("id", "=", id)
    .where("built_at", "is", null)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

/** The stored (sealed) archive of an upload; workers/uploads.ts `openArchive` opens it. */
export async function readArchive(db: Db, id: string): Promise<StoredArchive | undefined> {
  return db
    .selectFrom("uploads")
    .select(["id", "workspace_id", "worker_id", "archive", "archive_key_id"])
    .where("id", "=", id)
    .executeTakeFirst();
}

/** Archives to re-seal: under another key than the current one, or still in clear (rows from before 0.2). */
export async function archivesSealedUnderOtherKeys(db: Db, currentKeyId: string, limit: number): Promise<(StoredArchive & { archive: Buffer })[]> {
  const rows = await db
    .selectFrom("uploads")
    .select(["id", "workspace_id", "worker_id", "archive", "archive_key_id"])
    .where("archive", "is not", null)
    .where((eb) => eb.or([eb("archive_key_id", "is", null), eb("archive_key_id", "!=", currentKeyId)]))
    .limit(limit)
    .execute();
  return rows.filter((row): row is StoredArchive & { archive: Buffer } => row.archive !== null);
}

/**
 * Compare-and-set on the key id. An archive is written once and never changes, so the key id alone
 * tells whether another rotation re-sealed it meanwhile.
 */
export async function resealArchive(db: Db, row: Pick<StoredArchive, "id" | "archive_key_id">, next: { keyId: string; sealed: Buffer }): Promise<boolean> {
  const result = await db
    .updateTable("uploads")
    .set({ archive: next.sealed, archive_key_id: next.keyId })
    .where("id", "=", row.id)
    .where("archive", "is not", null)
    .where("archive_key_id", row.archive_key_id === null ? "is" : "=", row.archive_key_id)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

/** Drops uploads that expired unused, and archives of uploads that were superseded without a build. */
export async function deleteExpiredUploads(db: Db, now: number): Promise<number> {
  const result = await db
    .deleteFrom("uploads")
    .where("received_at", "is", null)
    .where("expires_at", "<=", now)
    .executeTakeFirst();
  return Number(result.numDeletedRows);
}

/**
 * Retention: deletes received uploads that are spent. An upload a build took before `builtBefore`
 * goes once no deployment references it (the archive of a kept deployment stays: machines that
 * have not installed its tree install from it). An upload never built goes once it expired and a
 * newer upload of the same worker arrived (BuildWorker only ever builds the newest). Answers the
 * number deleted.
 */
export async function deleteSpentUploads(db: Db, builtBefore: number, now: number): Promise<number> {
  const unreferenced = await db
    .deleteFrom("uploads")
    .where("received_at", "is not", null)
    .where("built_at", "is not", null)
    .where("built_at", "<", builtBefore)
    .where(({ not, exists, selectFrom }) =>
      not(
        exists(
          selectFrom("deployments")
            .select("deployments.id")
            .whereRef("deployments.worker_id", "=", "uploads.worker_id")
            .whereRef("deployments.upload_id", "=", "uploads.id"),
        ),
      ),
    )
    .executeTakeFirst();
  const superseded = await db
    .deleteFrom("uploads")
    .where("received_at", "is not", null)
    .where("built_at", "is", null)
    .where("expires_at", "<=", now)
    .where(({ exists, selectFrom }) =>
      exists(
        selectFrom("uploads as newer")
          .select("newer.id")
          .whereRef("newer.worker_id", "=", "uploads.worker_id")
          .whereRef("newer.received_at", ">", "uploads.received_at"),
      ),
    )
    .executeTakeFirst();
  return Number(unreferenced.numDeletedRows) + Number(superseded.numDeletedRows);
}
