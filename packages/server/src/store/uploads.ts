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

/**
 * Stores the archive if the upload is still unused: the compare-and-set on `received_at` makes
 * the issued fields single-use even when two requests race with them.
 */
export async function receiveUpload(db: Db, id: string, archive: Buffer, now: number): Promise<boolean> {
  const result = await db
    .updateTable("uploads")
    .set({ archive, archive_size: archive.length, received_at: now })
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

export async function readArchive(db: Db, id: string): Promise<Buffer | undefined> {
  const row = await db.selectFrom("uploads").select("archive").where("id", "=", id).executeTakeFirst();
  return row?.archive ?? undefined;
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
