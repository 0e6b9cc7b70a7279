import type { Kysely } from "kysely";
import type { Dialect } from "../db.js";

/**
 * Which secrets feed each OAuth capability's client id and secret, recorded once per deployment
 * at build time (JSON of names, never values), so configuration errors name them without loading
 * the worker again. Null for deployments built before, which fall back to loading it.
 */
export async function up(db: Kysely<unknown>, _dialect: Dialect): Promise<void> {
  await db.schema.alterTable("deployments").addColumn("client_secret_names", "text").execute();
}
