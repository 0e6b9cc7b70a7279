import { sql, type Kysely } from "kysely";
import type { Dialect } from "../db.js";

/**
 * Isolation and data at rest: each workspace gets a sandbox index (its workers' uid is the base
 * of the configured range plus this index), source archives and bundles are sealed like secrets
 * (a key id beside the ciphertext; rows written before stay readable in clear until rotation
 * re-seals them), and runs get an index for retention.
 */
export async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  const binary = dialect === "postgres" ? sql`bytea` : sql`blob`;

  await db.schema.alterTable("workspaces").addColumn("sandbox_index", "integer").execute();
  // Existing workspaces in the order they were made: 1, 2, 3, ...
  await sql`
    update workspaces set sandbox_index = (
      select count(*) from workspaces as earlier
      where earlier.created_at < workspaces.created_at
         or (earlier.created_at = workspaces.created_at and earlier.id <= workspaces.id)
    )
  `.execute(db);
  await db.schema.createIndex("workspaces_sandbox_index").on("workspaces").column("sandbox_index").unique().execute();

  await db.schema.alterTable("uploads").addColumn("archive_key_id", "text").execute();
  await db.schema.createIndex("uploads_archive_key").on("uploads").column("archive_key_id").execute();

  await db.schema.alterTable("deployments").addColumn("bundle_key_id", "text").execute();
  await db.schema.alterTable("deployments").addColumn("bundle_sealed", binary).execute();
  await db.schema.createIndex("deployments_bundle_key").on("deployments").column("bundle_key_id").execute();

  await db.schema.createIndex("runs_started").on("runs").column("started_at").execute();
}
