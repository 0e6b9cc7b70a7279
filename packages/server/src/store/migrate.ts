import { Migrator, sql, type Kysely, type Migration, type MigrationProvider } from "kysely";
import type { Dialect } from "./db.js";
import type { Database } from "./schema.js";
import * as m001 from "./migrations/001_core.js";
import * as m002 from "./migrations/002_oauth.js";
import * as m003 from "./migrations/003_isolation.js";
import * as m004 from "./migrations/004_client_secret_names.js";
import * as m005 from "./migrations/005_webhooks.js";
import * as m006 from "./migrations/006_webhook_waiting.js";
import * as m007 from "./migrations/007_webhook_spared_runs.js";

type DialectMigration = { up(db: Kysely<unknown>, dialect: Dialect): Promise<void> };

/** Every migration, in order. One set serves SQLite and PostgreSQL. */
const MIGRATIONS: Record<string, DialectMigration> = {
  "001_core": m001,
  "002_oauth": m002,
  "003_isolation": m003,
  "004_client_secret_names": m004,
  "005_webhooks": m005,
  "006_webhook_waiting": m006,
  "007_webhook_spared_runs": m007,
};

class InCodeProvider implements MigrationProvider {
  constructor(private readonly dialect: Dialect) {}
  async getMigrations(): Promise<Record<string, Migration>> {
    const out: Record<string, Migration> = {};
    for (const [name, m] of Object.entries(MIGRATIONS)) out[name] = { up: (db) => m.up(db, this.dialect) };
    return out;
  }
}

/** Brings the schema up to date; safe to run from several processes at once (Kysely locks). */
export async function migrateToLatest(db: Kysely<Database>, dialect: Dialect): Promise<void> {
  // On PostgreSQL, name the schema: Kysely otherwise looks for its lock table in every schema of
  // the database and may find another deployment's (or test's) instead of creating its own.
  let migrationTableSchema: string | undefined;
  if (dialect === "postgres") {
    const { rows } = await sql<{ schema: string }>`select current_schema() as schema`.execute(db);
    migrationTableSchema = rows[0]?.schema ?? undefined;
  }
  const migrator = new Migrator({
    db,
    provider: new InCodeProvider(dialect),
    ...(migrationTableSchema ? { migrationTableSchema } : {}),
  });
  let { error, results } = await migrator.migrateToLatest();
  // Kysely's introspection reads every schema of the database; one dropped meanwhile by someone
  // else (another deployment, a test) fails it with 3F000 naming that schema: read again.
  for (let attempt = 1; error && pgCode(error) === "3F000" && attempt < 5; attempt++) {
    await new Promise((resolve) => setTimeout(resolve, 50 * attempt));
    ({ error, results } = await migrator.migrateToLatest());
  }
  if (error) {
    const failed = results?.find((r) => r.status === "Error");
    const reason = error instanceof Error ? error.message : String(error);
    throw new Error(`Database migration ${failed?.migrationName ?? ""} failed: ${reason}`, { cause: error });
  }
}

/** PostgreSQL's error code of an error or of its causes. */
function pgCode(error: unknown): string | undefined {
  for (let e = error as { code?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 5; e = e.cause as typeof e, depth++) {
    if (typeof e.code === "string") return e.code;
  }
  return undefined;
}
