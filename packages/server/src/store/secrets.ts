import type { Kysely } from "kysely";
import { prepared } from "./prepared.js";
import type { Database, SecretRow } from "./schema.js";

type Db = Kysely<Database>;

/** Inserts or replaces one secret; keeps its creation time when it existed. */
export async function upsertSecret(db: Db, row: SecretRow): Promise<void> {
  await db
    .insertInto("secrets")
    .values(row)
    .onConflict((oc) =>
      oc.columns(["worker_id", "name"]).doUpdateSet({ key_id: row.key_id, sealed: row.sealed, updated_at: row.updated_at }),
    )
    .execute();
}

const secretNames = prepared((db: Db, p: { workerId: string }) =>
  db.selectFrom("secrets").select(["name", "created_at", "updated_at"]).where("worker_id", "=", p.workerId).orderBy("name"),
);

/** A worker's secret names and times, by name, without their values. */
export async function listSecretNames(db: Db, workerId: string): Promise<Pick<SecretRow, "name" | "created_at" | "updated_at">[]> {
  return secretNames(db, { workerId });
}

const secrets = prepared((db: Db, p: { workerId: string }) => db.selectFrom("secrets").selectAll().where("worker_id", "=", p.workerId).orderBy("name"));

/** A worker's secrets, sealed, by name. */
export async function listSecrets(db: Db, workerId: string): Promise<SecretRow[]> {
  return secrets(db, { workerId });
}

export async function deleteSecret(db: Db, workerId: string, name: string): Promise<boolean> {
  const result = await db.deleteFrom("secrets").where("worker_id", "=", workerId).where("name", "=", name).executeTakeFirst();
  return Number(result.numDeletedRows) > 0;
}

/** Rotation: rows still sealed under another key than `currentKeyId`. */
export async function secretsSealedUnderOtherKeys(db: Db, currentKeyId: string, limit: number): Promise<SecretRow[]> {
  return db.selectFrom("secrets").selectAll().where("key_id", "!=", currentKeyId).limit(limit).execute();
}

/** Compare-and-set: replaces the ciphertext only if nobody rewrote the row since it was read. */
export async function resealSecret(db: Db, row: SecretRow, next: { key_id: string; sealed: Buffer }): Promise<boolean> {
  const result = await db
    .updateTable("secrets")
    .set(next)
    .where("worker_id", "=", row.worker_id)
    .where("name", "=", row.name)
    .where("key_id", "=", row.key_id)
    .where("updated_at", "=", row.updated_at)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}
