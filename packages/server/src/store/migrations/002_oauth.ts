import { sql, type Kysely } from "kysely";
import type { Dialect } from "../db.js";

/** OAuth connections (sealed credentials, expiry, refresh bookkeeping, lease) and flows. */
export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  const binary = dialect === "postgres" ? sql`bytea` : sql`blob`;

  await db.schema
    .createTable("oauth_connections")
    .addColumn("worker_id", "text", (c) => c.notNull().references("workers.id").onDelete("cascade"))
    .addColumn("capability_key", "text", (c) => c.notNull())
    .addColumn("workspace_id", "text", (c) => c.notNull())
    .addColumn("status", "text", (c) => c.notNull())
    .addColumn("key_id", "text", (c) => c.notNull())
    .addColumn("sealed", binary, (c) => c.notNull())
    .addColumn("has_refresh_token", "integer", (c) => c.notNull())
    .addColumn("access_expires_at", "bigint")
    .addColumn("expiry_source", "text", (c) => c.notNull())
    .addColumn("connected_at", "bigint", (c) => c.notNull())
    .addColumn("obtained_at", "bigint", (c) => c.notNull())
    .addColumn("last_refresh_at", "bigint")
    .addColumn("next_refresh_at", "bigint")
    .addColumn("last_error", "text")
    .addColumn("last_error_at", "bigint")
    .addColumn("last_error_kind", "text")
    .addColumn("failure_count", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("version", "integer", (c) => c.notNull())
    .addColumn("lease_owner", "text")
    .addColumn("lease_expires_at", "bigint")
    .addColumn("updated_at", "bigint", (c) => c.notNull())
    .addPrimaryKeyConstraint("oauth_connections_pk", ["worker_id", "capability_key"])
    .execute();
  await db.schema.createIndex("oauth_connections_key").on("oauth_connections").column("key_id").execute();
  await db.schema.createIndex("oauth_connections_due").on("oauth_connections").columns(["status", "next_refresh_at"]).execute();

  await db.schema
    .createTable("oauth_flows")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("state_hash", "text", (c) => c.notNull().unique())
    .addColumn("workspace_id", "text", (c) => c.notNull())
    .addColumn("worker_id", "text", (c) => c.notNull().references("workers.id").onDelete("cascade"))
    .addColumn("capability_key", "text", (c) => c.notNull())
    .addColumn("key_id", "text", (c) => c.notNull())
    .addColumn("sealed", binary, (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("expires_at", "bigint", (c) => c.notNull())
    .addColumn("consumed_at", "bigint")
    .addColumn("status", "text", (c) => c.notNull())
    .addColumn("error", "text")
    .addColumn("hint", "text")
    .addColumn("completed_at", "bigint")
    .execute();
  await db.schema.createIndex("oauth_flows_key").on("oauth_flows").column("key_id").execute();
}
