import fs from "node:fs";
import path from "node:path";
import { Kysely, PostgresDialect, SqliteDialect } from "kysely";
import type { Database } from "./schema.js";

export type Dialect = "sqlite" | "postgres";

export interface Store {
  db: Kysely<Database>;
  dialect: Dialect;
  /** Where the data lives, for messages: the SQLite file or the PostgreSQL host/database. */
  location: string;
  /** SQLite: the database file, for a writer connection of its own (sqlite-writer.ts). */
  sqliteFile?: string;
  close(): Promise<void>;
}

/**
 * One query layer over both engines. SQLite (the default) lives in `<dataDir>/workyard.db`, in WAL
 * mode with synchronous=FULL so a commit that returned survives a crash or power loss.
 * PostgreSQL is chosen by DATABASE_URL.
 */
export async function openStore(options: { dataDir: string; databaseUrl?: string | undefined }): Promise<Store> {
  if (options.databaseUrl) return openPostgres(options.databaseUrl);
  return openSqlite(path.join(options.dataDir, "workyard.db"));
}

async function openSqlite(file: string): Promise<Store> {
  const { default: SQLite } = await import("better-sqlite3");
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const database = new SQLite(file);
  fs.chmodSync(file, 0o600);
  database.pragma("journal_mode = WAL");
  database.pragma("synchronous = FULL");
  database.pragma("foreign_keys = ON");
  // Other processes (ntn server rotate-key, a second server) may hold the write lock briefly.
  database.pragma("busy_timeout = 5000");
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: withStatementCache(database) }) });
  return {
    db,
    dialect: "sqlite",
    location: file,
    sqliteFile: file,
    close: () => db.destroy(),
  };
}

/**
 * Kysely prepares every query anew; better-sqlite3 statements are reusable, so keep the compiled
 * ones (the query shapes are a fixed, small set, bounded here anyway).
 */
function withStatementCache(database: import("better-sqlite3").Database): import("better-sqlite3").Database {
  const cache = new Map<string, import("better-sqlite3").Statement>();
  const prepare = database.prepare.bind(database);
  return new Proxy(database, {
    get(target, property, receiver) {
      if (property !== "prepare") {
        const value = Reflect.get(target, property, receiver) as unknown;
        // Native methods need the real Database as `this`.
        return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      }
      return (sql: string) => {
        let statement = cache.get(sql);
        if (!statement) {
          statement = prepare(sql);
          if (cache.size >= 500) cache.delete(cache.keys().next().value!);
          cache.set(sql, statement);
        }
        return statement;
      };
    },
  });
}

async function openPostgres(url: string): Promise<Store> {
  const pg = await import("pg");
  const { Pool, types } = pg.default;
  // BIGINT columns hold epoch milliseconds, far below 2^53: read them as numbers, not strings.
  const parseBigint = (value: string) => Number(value);
  const pool = new Pool({
    connectionString: url,
    max: 20,
    // A request waits this long for a connection, then answers store_busy (503, Retry-After).
    connectionTimeoutMillis: 10_000,
    types: {
      getTypeParser: ((oid: number, format?: "text" | "binary") =>
        oid === 20 ? parseBigint : types.getTypeParser(oid, format as "text")) as typeof types.getTypeParser,
    },
  });
  // Fail at start with a clear message instead of at the first request.
  const client = await pool.connect().catch(async (error: Error) => {
    await pool.end().catch(() => {});
    throw new Error(`Cannot connect to PostgreSQL (DATABASE_URL): ${error.message}`);
  });
  client.release();
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  const where = new URL(url);
  return {
    db,
    dialect: "postgres",
    location: `postgres://${where.host}${where.pathname}`,
    close: () => db.destroy(),
  };
}
