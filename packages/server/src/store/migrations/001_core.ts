import { sql, type Kysely } from "kysely";
import type { Dialect } from "../db.js";

/** Workspaces, API tokens, workers, uploads, deployments, secrets, runs and CLI login sessions. */
export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  const binary = dialect === "postgres" ? sql`bytea` : sql`blob`;

  await db.schema
    .createTable("workspaces")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .execute();

  await db.schema
    .createTable("api_tokens")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("workspace_id", "text", (c) => c.notNull().references("workspaces.id").onDelete("cascade"))
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("token_hash", "text", (c) => c.notNull().unique())
    .addColumn("role", "text", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("expires_at", "bigint")
    .addColumn("revoked_at", "bigint")
    .execute();
  await db.schema.createIndex("api_tokens_workspace").on("api_tokens").column("workspace_id").execute();

  await db.schema
    .createTable("workers")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("workspace_id", "text", (c) => c.notNull().references("workspaces.id").onDelete("cascade"))
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("updated_at", "bigint", (c) => c.notNull())
    .addColumn("live_deployment_id", "text")
    .addColumn("secrets_version", "integer", (c) => c.notNull().defaultTo(0))
    .execute();
  await db.schema.createIndex("workers_workspace").on("workers").columns(["workspace_id", "created_at"]).execute();

  await db.schema
    .createTable("uploads")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("workspace_id", "text", (c) => c.notNull())
    .addColumn("worker_id", "text", (c) => c.notNull().references("workers.id").onDelete("cascade"))
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("expires_at", "bigint", (c) => c.notNull())
    .addColumn("received_at", "bigint")
    .addColumn("archive", binary)
    .addColumn("archive_size", "bigint")
    .addColumn("built_at", "bigint")
    .execute();
  await db.schema.createIndex("uploads_worker").on("uploads").columns(["worker_id", "received_at"]).execute();

  await db.schema
    .createTable("deployments")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("workspace_id", "text", (c) => c.notNull())
    .addColumn("worker_id", "text", (c) => c.notNull().references("workers.id").onDelete("cascade"))
    .addColumn("upload_id", "text", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("finished_at", "bigint")
    .addColumn("status", "text", (c) => c.notNull())
    .addColumn("lockfile_hash", "text")
    .addColumn("bundle", "text")
    .addColumn("source_map", "text")
    .addColumn("capabilities", "text")
    .addColumn("manifest_key_id", "text")
    .addColumn("manifest_sealed", binary)
    .addColumn("manifest_secrets_version", "integer")
    .addColumn("build_log", "text")
    .addColumn("error", "text")
    .execute();
  await db.schema.createIndex("deployments_worker").on("deployments").columns(["worker_id", "created_at"]).execute();
  await db.schema.createIndex("deployments_manifest_key").on("deployments").column("manifest_key_id").execute();

  await db.schema
    .createTable("secrets")
    .addColumn("workspace_id", "text", (c) => c.notNull())
    .addColumn("worker_id", "text", (c) => c.notNull().references("workers.id").onDelete("cascade"))
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("key_id", "text", (c) => c.notNull())
    .addColumn("sealed", binary, (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("updated_at", "bigint", (c) => c.notNull())
    .addPrimaryKeyConstraint("secrets_pk", ["worker_id", "name"])
    .execute();
  await db.schema.createIndex("secrets_key").on("secrets").column("key_id").execute();

  await db.schema
    .createTable("runs")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("workspace_id", "text", (c) => c.notNull())
    .addColumn("worker_id", "text", (c) => c.notNull().references("workers.id").onDelete("cascade"))
    .addColumn("deployment_id", "text", (c) => c.notNull())
    .addColumn("capability_key", "text", (c) => c.notNull())
    .addColumn("status", "text", (c) => c.notNull())
    .addColumn("exit_code", "integer")
    .addColumn("started_at", "bigint", (c) => c.notNull())
    .addColumn("ended_at", "bigint")
    .addColumn("duration_ms", "bigint")
    .addColumn("error", "text")
    .addColumn("logs", "text")
    .execute();
  await db.schema.createIndex("runs_worker").on("runs").columns(["worker_id", "started_at"]).execute();

  await db.schema
    .createTable("cli_login_sessions")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("browser_id", "text", (c) => c.notNull().unique())
    .addColumn("verification_code", "text", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("expires_at", "bigint", (c) => c.notNull())
    .addColumn("approved_workspace_id", "text")
    .addColumn("approved_at", "bigint")
    .addColumn("redeemed_at", "bigint")
    .execute();
}
