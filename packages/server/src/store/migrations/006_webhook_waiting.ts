import type { Kysely } from "kysely";
import type { Dialect } from "../db.js";

/**
 * The queue's bound per workspace counts a workspace's deliveries waiting to run (read at most once
 * a second per process): an index on (workspace_id, status) keeps that count to the workspace's own
 * rows instead of every waiting one.
 */
export async function up(db: Kysely<unknown>, _dialect: Dialect): Promise<void> {
  await db.schema.createIndex("webhook_deliveries_waiting").on("webhook_deliveries").columns(["workspace_id", "status"]).execute();
}
