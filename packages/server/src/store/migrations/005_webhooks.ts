import { sql, type Kysely } from "kysely";
import type { Dialect } from "../db.js";

/**
 * Webhooks: one row per webhook capability of a worker (its URL's secret id sealed like a secret,
 * and its SHA-256 for lookups, so a copy of the database cannot post events), and every delivery
 * accepted, its request sealed, until it ran (and its retention ran out); a run names the delivery
 * it attempted.
 */
export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  const binary = dialect === "postgres" ? sql`bytea` : sql`blob`;
  await db.schema
    .createTable("webhooks")
    .addColumn("worker_id", "text", (c) => c.notNull().references("workers.id").onDelete("cascade"))
    .addColumn("key", "text", (c) => c.notNull())
    .addColumn("workspace_id", "text", (c) => c.notNull())
    .addColumn("secret_hash", "text", (c) => c.notNull())
    .addColumn("secret_key_id", "text", (c) => c.notNull())
    .addColumn("secret_sealed", binary, (c) => c.notNull())
    .addColumn("verification_enabled", "integer", (c) => c.notNull().defaultTo(1))
    .addColumn("verification_failures", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("blocked_at", "bigint")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("updated_at", "bigint", (c) => c.notNull())
    .addPrimaryKeyConstraint("webhooks_pk", ["worker_id", "key"])
    .execute();
  await db.schema.createIndex("webhooks_secret_key").on("webhooks").column("secret_key_id").execute();

  await db.schema
    .createTable("webhook_deliveries")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("workspace_id", "text", (c) => c.notNull())
    .addColumn("worker_id", "text", (c) => c.notNull().references("workers.id").onDelete("cascade"))
    .addColumn("webhook_key", "text", (c) => c.notNull())
    .addColumn("status", "text", (c) => c.notNull())
    .addColumn("attempts", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("run_ids", "text", (c) => c.notNull().defaultTo("[]"))
    .addColumn("request_key_id", "text", (c) => c.notNull())
    .addColumn("request_sealed", binary, (c) => c.notNull())
    .addColumn("received_at", "bigint", (c) => c.notNull())
    .addColumn("next_attempt_at", "bigint", (c) => c.notNull())
    .addColumn("lease_owner", "text")
    .addColumn("lease_until", "bigint")
    .addColumn("finished_at", "bigint")
    .addColumn("last_error", "text")
    .execute();
  await db.schema.createIndex("webhook_deliveries_due").on("webhook_deliveries").columns(["status", "next_attempt_at"]).execute();
  await db.schema.createIndex("webhook_deliveries_by_webhook").on("webhook_deliveries").columns(["worker_id", "webhook_key", "received_at"]).execute();
  await db.schema.createIndex("webhook_deliveries_request_key").on("webhook_deliveries").column("request_key_id").execute();

  // A webhook's run names the delivery it attempted.
  await db.schema.alterTable("runs").addColumn("delivery_id", "text").execute();
}
