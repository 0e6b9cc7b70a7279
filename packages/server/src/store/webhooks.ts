import type { ExpressionBuilder, Kysely } from "kysely";
import type { Dialect } from "./db.js";
import type { Database, DeliveryRow, DeliveryStatus, WebhookRow } from "./schema.js";

type Db = Kysely<Database>;

export async function listWebhooks(db: Db, workerId: string): Promise<WebhookRow[]> {
  return db.selectFrom("webhooks").selectAll().where("worker_id", "=", workerId).orderBy("key").execute();
}

export async function findWebhook(db: Db, workerId: string, key: string): Promise<WebhookRow | undefined> {
  return db.selectFrom("webhooks").selectAll().where("worker_id", "=", workerId).where("key", "=", key).executeTakeFirst();
}

/** A new webhook's row; an existing one (a redeploy) keeps its URL. Answers whether it was new. */
export async function insertWebhookIfAbsent(db: Db, row: WebhookRow): Promise<boolean> {
  const result = await db.insertInto("webhooks").values(row).onConflict((oc) => oc.columns(["worker_id", "key"]).doNothing()).executeTakeFirst();
  return Number(result.numInsertedOrUpdatedRows ?? 0) > 0;
}

/** A redeploy unblocks every webhook of the worker and clears their counts of failed verifications. */
export async function resetVerification(db: Db, workerId: string, now: number): Promise<void> {
  await db.updateTable("webhooks").set({ verification_failures: 0, blocked_at: null, updated_at: now }).where("worker_id", "=", workerId).execute();
}

/** After a run: a verification failure counts (and blocks at `blockAfter`), anything else resets the count. */
export async function recordVerification(db: Db, workerId: string, key: string, failed: boolean, blockAfter: number, now: number): Promise<void> {
  if (!failed) {
    await db.updateTable("webhooks").set({ verification_failures: 0, updated_at: now }).where("worker_id", "=", workerId).where("key", "=", key).execute();
    return;
  }
  await db
    .updateTable("webhooks")
    .set((eb) => ({ verification_failures: eb("verification_failures", "+", 1), updated_at: now }))
    .where("worker_id", "=", workerId)
    .where("key", "=", key)
    .execute();
  await db
    .updateTable("webhooks")
    .set({ blocked_at: now })
    .where("worker_id", "=", workerId)
    .where("key", "=", key)
    .where("blocked_at", "is", null)
    .where("verification_failures", ">=", blockAfter)
    .execute();
}

/** What a new delivery is made of; it starts queued, due at once, with no attempt yet. */
export type NewDelivery = Pick<DeliveryRow, "id" | "workspace_id" | "worker_id" | "webhook_key" | "request_key_id" | "request_sealed" | "received_at">;

/**
 * Stores a new delivery, queued; or, with `claimed`, already running under that claim (the
 * process that took it runs it at once, no claim to make). Answers the row as stored.
 */
export async function insertDelivery(db: Db, delivery: NewDelivery, claimed?: { claim: string; leaseUntil: number }): Promise<DeliveryRow> {
  const row: DeliveryRow = {
    ...delivery,
    status: claimed ? "running" : "queued",
    attempts: 0,
    run_ids: "[]",
    spared_runs: 0,
    next_attempt_at: delivery.received_at,
    lease_owner: claimed?.claim ?? null,
    lease_until: claimed?.leaseUntil ?? null,
    finished_at: null,
    last_error: null,
  };
  await db.insertInto("webhook_deliveries").values(row).execute();
  return row;
}

/** How many deliveries wait to run, in one workspace or in all, for the bounds on what is accepted. */
export async function countWaiting(db: Db, workspaceId?: string): Promise<number> {
  let query = db
    .selectFrom("webhook_deliveries")
    .select((eb) => eb.fn.countAll<number>().as("n"))
    .where("status", "in", ["queued", "running"]);
  if (workspaceId !== undefined) query = query.where("workspace_id", "=", workspaceId);
  const row = await query.executeTakeFirstOrThrow();
  return Number(row.n);
}

/**
 * Takes up to `limit` deliveries that are due (queued and past their backoff, or running under a
 * lease that ran out: their process died) under the claim token `claim` until `leaseUntil`, in one
 * statement. On PostgreSQL the rows are picked `FOR UPDATE SKIP LOCKED`, so processes claiming at
 * once take different rows instead of waiting on each other, and the update re-checks that each
 * row is still due, so a delivery runs under one claim at a time, whatever the number of processes.
 * SQLite has one writer, so the statement is atomic there as it is.
 */
export async function claimDue(
  db: Db,
  dialect: Dialect,
  claim: string,
  now: number,
  leaseUntil: number,
  limit: number,
  exclude: string[] = [],
): Promise<DeliveryRow[]> {
  const queuedDue = (eb: ExpressionBuilder<Database, "webhook_deliveries">) => eb.and([eb("status", "=", "queued"), eb("next_attempt_at", "<=", now)]);
  const leaseRanOut = (eb: ExpressionBuilder<Database, "webhook_deliveries">) => eb.and([eb("status", "=", "running"), eb("lease_until", "<", now)]);
  const due = (eb: ExpressionBuilder<Database, "webhook_deliveries">) => eb.or([queuedDue(eb), leaseRanOut(eb)]);
  // What this process runs now is never taken again by it, even with its lease run out.
  const oldest = (where: typeof due) => {
    let query = db.selectFrom("webhook_deliveries").select(["id", "next_attempt_at"]).where(where).orderBy("next_attempt_at").limit(limit);
    if (exclude.length > 0) query = query.where("id", "not in", exclude);
    return query;
  };
  // SQLite: each kind of due row read in the order of the (status, next_attempt_at) index, at most
  // `limit` of each, so a backlog is never sorted whole (an OR would be). PostgreSQL: one pick
  // `FOR UPDATE SKIP LOCKED` (which a UNION cannot carry).
  const pick =
    dialect === "postgres"
      ? oldest(due).forUpdate().skipLocked()
      : db
          .selectFrom(
            db
              .selectFrom(oldest(queuedDue).as("q"))
              .selectAll()
              .unionAll(db.selectFrom(oldest(leaseRanOut).as("r")).selectAll())
              .as("both"),
          )
          .select(["both.id", "both.next_attempt_at"])
          .orderBy("both.next_attempt_at")
          .limit(limit);
  // The pick is materialised once: as a plain `IN (subquery)` PostgreSQL may run it again per row
  // updated, and its LIMIT would then not bound what is taken.
  let update = db
    .with((cte) => cte("picked").materialized(), () => pick)
    .updateTable("webhook_deliveries")
    .set({ status: "running", lease_owner: claim, lease_until: leaseUntil })
    .where("id", "in", (eb) => eb.selectFrom("picked").select("picked.id"));
  // PostgreSQL: still due as the update sees the row. SQLite runs the statement alone, and with the
  // condition there it would walk every queued row (a backlog) instead of the few picked.
  if (dialect === "postgres") update = update.where(due);
  return update.returningAll().execute();
}

/** Extends a claim's lease while its attempt goes on (loading, waiting for a process, running). */
export async function renewLease(db: Db, id: string, claim: string, leaseUntil: number): Promise<boolean> {
  const result = await db.updateTable("webhook_deliveries").set({ lease_until: leaseUntil }).where("id", "=", id).where("lease_owner", "=", claim).executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

/** The end of one attempt, written only by the claim that holds the lease. */
export async function finishAttempt(
  db: Db,
  id: string,
  claim: string,
  fields: { status: DeliveryStatus; attempts: number; spared_runs: number; run_ids: string; next_attempt_at: number; finished_at: number | null; last_error: string | null },
): Promise<boolean> {
  const result = await db
    .updateTable("webhook_deliveries")
    .set({ ...fields, lease_owner: null, lease_until: null })
    .where("id", "=", id)
    .where("lease_owner", "=", claim)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

/** The newest deliveries of one webhook, without their requests. */
export async function listDeliveries(db: Db, workerId: string, key: string, limit: number) {
  return db
    .selectFrom("webhook_deliveries")
    .select(["id", "status", "attempts", "run_ids", "received_at", "finished_at", "last_error"])
    .where("worker_id", "=", workerId)
    .where("webhook_key", "=", key)
    .orderBy("received_at", "desc")
    .orderBy("id", "desc")
    .limit(limit)
    .execute();
}

/** The newest delivery of each webhook of a worker, for `webhooks list`. */
export async function lastDeliveries(db: Db, workerId: string): Promise<Map<string, { status: DeliveryStatus; received_at: number }>> {
  const rows = await db
    .selectFrom("webhook_deliveries as d")
    .select(["d.webhook_key", "d.status", "d.received_at"])
    .where("d.worker_id", "=", workerId)
    .where((eb) =>
      eb(
        "d.received_at",
        "=",
        eb.selectFrom("webhook_deliveries as e").select((e) => e.fn.max("e.received_at").as("m")).where("e.worker_id", "=", workerId).whereRef("e.webhook_key", "=", "d.webhook_key"),
      ),
    )
    .execute();
  return new Map(rows.map((r) => [r.webhook_key, { status: r.status, received_at: Number(r.received_at) }]));
}

/** Key rotation (vault/rotate.ts): webhook secret ids and delivery requests sealed under another key. */
export async function webhookSecretsSealedUnderOtherKeys(db: Db, currentKeyId: string, limit: number): Promise<WebhookRow[]> {
  return db.selectFrom("webhooks").selectAll().where("secret_key_id", "!=", currentKeyId).limit(limit).execute();
}

export async function resealWebhookSecret(db: Db, row: WebhookRow, next: { keyId: string; sealed: Buffer }): Promise<boolean> {
  const result = await db
    .updateTable("webhooks")
    .set({ secret_key_id: next.keyId, secret_sealed: next.sealed })
    .where("worker_id", "=", row.worker_id)
    .where("key", "=", row.key)
    .where("secret_key_id", "=", row.secret_key_id)
    .where("secret_hash", "=", row.secret_hash)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

export async function deliveriesSealedUnderOtherKeys(db: Db, currentKeyId: string, limit: number) {
  return db
    .selectFrom("webhook_deliveries")
    .select(["id", "workspace_id", "worker_id", "request_key_id", "request_sealed"])
    .where("request_key_id", "!=", currentKeyId)
    .limit(limit)
    .execute();
}

export async function resealDelivery(db: Db, id: string, previousKeyId: string, next: { keyId: string; sealed: Buffer }): Promise<boolean> {
  const result = await db
    .updateTable("webhook_deliveries")
    .set({ request_key_id: next.keyId, request_sealed: next.sealed })
    .where("id", "=", id)
    .where("request_key_id", "=", previousKeyId)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

/** A webhook's switches: verification on or off, blocked or not, its count of failures in a row. */
export async function setWebhookState(
  db: Db,
  workerId: string,
  key: string,
  fields: Partial<Pick<WebhookRow, "verification_enabled" | "verification_failures" | "blocked_at">>,
  now: number,
): Promise<boolean> {
  const result = await db.updateTable("webhooks").set({ ...fields, updated_at: now }).where("worker_id", "=", workerId).where("key", "=", key).executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

/** A new secret id for a webhook's URL: the old URL stops working at once. */
export async function replaceWebhookSecret(db: Db, workerId: string, key: string, secret: { hash: string; keyId: string; sealed: Buffer }, now: number): Promise<boolean> {
  const result = await db
    .updateTable("webhooks")
    .set({ secret_hash: secret.hash, secret_key_id: secret.keyId, secret_sealed: secret.sealed, updated_at: now })
    .where("worker_id", "=", workerId)
    .where("key", "=", key)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

export async function findDelivery(db: Db, workerId: string, id: string): Promise<DeliveryRow | undefined> {
  return db.selectFrom("webhook_deliveries").selectAll().where("worker_id", "=", workerId).where("id", "=", id).executeTakeFirst();
}

/** Queues a finished delivery again, with a fresh budget of retries; not one under way. */
export async function requeueDelivery(db: Db, workerId: string, id: string, now: number): Promise<boolean> {
  const result = await db
    .updateTable("webhook_deliveries")
    .set({ status: "queued", attempts: 0, spared_runs: 0, next_attempt_at: now, finished_at: null, last_error: null, lease_owner: null, lease_until: null })
    .where("worker_id", "=", workerId)
    .where("id", "=", id)
    .where("status", "in", ["succeeded", "failed", "verification_failed"])
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

/** Retention: finished deliveries (their sealed requests with them) received before `before`. */
export async function deleteFinishedDeliveries(db: Db, before: number): Promise<number> {
  const result = await db
    .deleteFrom("webhook_deliveries")
    .where("received_at", "<", before)
    .where("status", "in", ["succeeded", "failed", "verification_failed"])
    .executeTakeFirst();
  return Number(result.numDeletedRows);
}
