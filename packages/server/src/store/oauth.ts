import type { Kysely } from "kysely";
import { prepared } from "./prepared.js";
import type { Database, OauthConnectionRow, OauthFlowRow } from "./schema.js";

type Db = Kysely<Database>;

// ---- flows

export async function insertFlow(db: Db, row: OauthFlowRow): Promise<void> {
  await db.insertInto("oauth_flows").values(row).execute();
}

export async function findFlowByStateHash(db: Db, stateHash: string): Promise<OauthFlowRow | undefined> {
  return db.selectFrom("oauth_flows").selectAll().where("state_hash", "=", stateHash).executeTakeFirst();
}

/** Single use: true for the one request that consumes an unexpired flow. */
export async function consumeFlow(db: Db, id: string, now: number): Promise<boolean> {
  const result = await db
    .updateTable("oauth_flows")
    .set({ consumed_at: now })
    .where("id", "=", id)
    .where("consumed_at", "is", null)
    .where("expires_at", ">", now)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

export async function completeFlow(
  db: Db,
  id: string,
  outcome: { status: "connected" | "failed"; error?: string | null; hint?: string | null },
  now: number,
): Promise<void> {
  await db
    .updateTable("oauth_flows")
    .set({ status: outcome.status, error: outcome.error ?? null, hint: outcome.hint ?? null, completed_at: now })
    .where("id", "=", id)
    .execute();
}

export async function deleteOldFlows(db: Db, before: number): Promise<void> {
  await db.deleteFrom("oauth_flows").where("expires_at", "<", before).execute();
}

// ---- connections

const connection = prepared((db: Db, p: { workerId: string; key: string }) =>
  db.selectFrom("oauth_connections").selectAll().where("worker_id", "=", p.workerId).where("capability_key", "=", p.key),
);

export async function findConnection(db: Db, workerId: string, key: string): Promise<OauthConnectionRow | undefined> {
  return (await connection(db, { workerId, key }))[0];
}

export async function listConnections(db: Db, workerId: string): Promise<OauthConnectionRow[]> {
  return db.selectFrom("oauth_connections").selectAll().where("worker_id", "=", workerId).orderBy("capability_key").execute();
}

/**
 * A new authorization replaces whatever was stored, lease included; the version keeps counting.
 * One statement (insert, or update on the key's conflict): two callbacks for one capability at
 * once both succeed, the later one's tokens stay.
 */
export async function replaceConnection(db: Db, row: Omit<OauthConnectionRow, "version">): Promise<number> {
  const written = await db
    .insertInto("oauth_connections")
    .values({ ...row, version: 1 })
    .onConflict((oc) =>
      oc.columns(["worker_id", "capability_key"]).doUpdateSet((eb) => ({
        ...row,
        version: eb(eb.ref("oauth_connections.version"), "+", 1),
      })),
    )
    .returning("version")
    .executeTakeFirstOrThrow();
  return Number(written.version);
}

export async function deleteConnection(db: Db, workerId: string, key: string): Promise<boolean> {
  const result = await db
    .deleteFrom("oauth_connections")
    .where("worker_id", "=", workerId)
    .where("capability_key", "=", key)
    .executeTakeFirst();
  return Number(result.numDeletedRows) > 0;
}

/**
 * Takes the refresh lease if nobody holds a live one. The owner id is fresh per acquisition: a
 * refresher whose lease ran out and was taken over can no longer write (see writeRefreshed).
 */
export async function acquireLease(db: Db, workerId: string, key: string, owner: string, now: number, ttlMs: number): Promise<boolean> {
  const result = await db
    .updateTable("oauth_connections")
    .set({ lease_owner: owner, lease_expires_at: now + ttlMs })
    .where("worker_id", "=", workerId)
    .where("capability_key", "=", key)
    .where((eb) => eb.or([eb("lease_owner", "is", null), eb("lease_expires_at", "<", now)]))
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

export async function releaseLease(db: Db, workerId: string, key: string, owner: string): Promise<void> {
  await db
    .updateTable("oauth_connections")
    .set({ lease_owner: null, lease_expires_at: null })
    .where("worker_id", "=", workerId)
    .where("capability_key", "=", key)
    .where("lease_owner", "=", owner)
    .execute();
}

/**
 * Stores refreshed credentials (and releases the lease) only while this owner still holds the
 * lease and the row is at the version it read: fenced compare-and-set. False means someone else
 * wrote meanwhile and this write was dropped.
 */
export async function writeRefreshed(
  db: Db,
  workerId: string,
  key: string,
  fence: { owner: string; version: number },
  fields: Partial<Omit<OauthConnectionRow, "worker_id" | "capability_key" | "workspace_id" | "version">>,
): Promise<boolean> {
  const result = await db
    .updateTable("oauth_connections")
    .set({ ...fields, version: fence.version + 1, lease_owner: null, lease_expires_at: null })
    .where("worker_id", "=", workerId)
    .where("capability_key", "=", key)
    .where("lease_owner", "=", fence.owner)
    .where("version", "=", fence.version)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

/** Rotation: connections and flows sealed under another key. */
export async function connectionsSealedUnderOtherKeys(db: Db, currentKeyId: string, limit: number): Promise<OauthConnectionRow[]> {
  return db.selectFrom("oauth_connections").selectAll().where("key_id", "!=", currentKeyId).limit(limit).execute();
}

export async function resealConnection(db: Db, row: OauthConnectionRow, next: { key_id: string; sealed: Buffer }): Promise<boolean> {
  const result = await db
    .updateTable("oauth_connections")
    .set({ ...next, version: row.version + 1 })
    .where("worker_id", "=", row.worker_id)
    .where("capability_key", "=", row.capability_key)
    .where("version", "=", row.version)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

export async function flowsSealedUnderOtherKeys(db: Db, currentKeyId: string, limit: number): Promise<OauthFlowRow[]> {
  return db.selectFrom("oauth_flows").selectAll().where("key_id", "!=", currentKeyId).limit(limit).execute();
}

export async function resealFlow(db: Db, row: OauthFlowRow, next: { key_id: string; sealed: Buffer }): Promise<boolean> {
  const result = await db
    .updateTable("oauth_flows")
    .set(next)
    .where("id", "=", row.id)
    .where("key_id", "=", row.key_id)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

/** Connections whose refresh is due: connected, refreshable, next refresh at or before `until`. */
export async function dueConnections(db: Db, until: number, limit: number): Promise<OauthConnectionRow[]> {
  return db
    .selectFrom("oauth_connections")
    .selectAll()
    .where("status", "=", "connected")
    .where("has_refresh_token", "=", 1)
    .where("next_refresh_at", "<=", until)
    .where((eb) => eb.or([eb("lease_owner", "is", null), eb("lease_expires_at", "<", until)]))
    .orderBy("next_refresh_at")
    .limit(limit)
    .execute();
}

/** Puts off a connection's next background refresh (its configuration cannot be read now). */
export async function postponeRefresh(db: Db, row: OauthConnectionRow, next: number, error: string, now: number): Promise<void> {
  await db
    .updateTable("oauth_connections")
    .set({
      next_refresh_at: next,
      last_error: error,
      last_error_at: now,
      last_error_kind: "configuration",
      failure_count: row.failure_count + 1,
      version: row.version + 1,
    })
    .where("worker_id", "=", row.worker_id)
    .where("capability_key", "=", row.capability_key)
    .where("version", "=", row.version)
    .execute();
}
