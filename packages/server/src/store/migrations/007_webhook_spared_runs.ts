import type { Kysely } from "kysely";
import type { Dialect } from "../db.js";

/**
 * A delivery's runs stopped for another run's time limit and not counted as attempts (runs share
 * processes): counted on their own, so their bound holds whatever else the delivery went through
 * (attempts that failed before a run existed, a redelivery, which resets both).
 */
export async function up(db: Kysely<unknown>, _dialect: Dialect): Promise<void> {
  await db.schema.alterTable("webhook_deliveries").addColumn("spared_runs", "integer", (c) => c.notNull().defaultTo(0)).execute();
}
