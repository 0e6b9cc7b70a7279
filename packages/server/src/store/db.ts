import fs from "node:fs";
import path from "node:path";
import { Kysely, PostgresDialect, SqliteDialect } from "kysely";
import { AppError } from "../errors.js";
import { localChangeFeed, postgresChangeFeed, type ChangeFeed } from "./changes.js";
import type { Database } from "./schema.js";

/**
 * The database could not take the query now: no connection within the wait, the SQLite write
 * lock held past its timeout, a serialisation failure or deadlock PostgreSQL resolved by giving up
 * this transaction. Busy, not broken: 503 with Retry-After, and the caller tries again.
 */
export class StoreBusyError extends AppError {
  constructor(cause: unknown) {
    super("store_busy", "The server is busy (its database did not take the request in time); try again shortly.", {
      hint: "Retry after the time in the Retry-After header.",
      cause,
    });
    this.name = "StoreBusyError";
  }
}

/** SQLite's codes for a lock it could not take in time. */
const SQLITE_BUSY_CODES = new Set(["SQLITE_BUSY", "SQLITE_BUSY_SNAPSHOT", "SQLITE_BUSY_TIMEOUT", "SQLITE_LOCKED", "SQLITE_LOCKED_SHAREDCACHE"]);
/** PostgreSQL's SQLSTATEs for a transaction given up, or a server that cannot take it now. */
const PG_BUSY_CODES = new Set(["40001", "40P01", "53300", "57P03", "55P03"]);

/** A SQLite error as the store throws it: its lock timeouts as StoreBusyError (503), the rest as they are. */
export function sqliteBusyOr(error: unknown): unknown {
  return busyOr(error, SQLITE_BUSY_CODES);
}

function busyOr(error: unknown, codes: Set<string>): unknown {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && codes.has(code) ? new StoreBusyError(error) : error;
}

/** A connection lost or refused, on either side: node's socket errors and PostgreSQL's class 08, and its shutdowns. */
const CONNECTION_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "57P01", "57P02", "08000", "08001", "08003", "08004", "08006"]);

/**
 * Whether a failed write may succeed if tried again as it is: the database busy or out of reach
 * for now, not a row it refuses (a foreign key, a constraint).
 */
export function isTransientStoreError(error: unknown): boolean {
  if (error instanceof StoreBusyError) return true;
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === "string" && (SQLITE_BUSY_CODES.has(code) || PG_BUSY_CODES.has(code) || CONNECTION_CODES.has(code))) return true;
  // node-postgres says this of a connection that closed under a query; it gives no code.
  return error instanceof Error && /^Connection terminated/.test(error.message);
}

/** A row that refers to one deleted meanwhile (a run of a worker deleted while it ran). */
export function isForeignKeyViolation(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === "SQLITE_CONSTRAINT_FOREIGNKEY" || code === "23503";
}

export type Dialect = "sqlite" | "postgres";

export interface Store {
  db: Kysely<Database>;
  dialect: Dialect;
  /** Where the data lives, for messages: the SQLite file or the PostgreSQL host/database. */
  location: string;
  /** SQLite: the database file, for a writer connection of its own (sqlite-writer.ts). */
  sqliteFile?: string;
  /** Writes that rows kept in memory depend on, told to every server process (changes.ts). */
  changes: ChangeFeed;
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

/**
 * Sets up a SQLite connection as every connection of the server is set up (the store's and the
 * writer thread's, sqlite-writer.ts): WAL, with synchronous=FULL so a commit that returned survives
 * a crash or power loss; foreign keys enforced; and a wait for the write lock, which other
 * processes (ntn server rotate-key, a second server) and the other connection may hold briefly.
 *
 * Self-contained on purpose (no name from outside its body): the writer thread runs its source.
 */
export function setUpSqliteConnection(database: { pragma(source: string): unknown }): void {
  database.pragma("journal_mode = WAL");
  database.pragma("synchronous = FULL");
  database.pragma("foreign_keys = ON");
  database.pragma("busy_timeout = 5000");
}

async function openSqlite(file: string): Promise<Store> {
  const { default: SQLite } = await import("better-sqlite3");
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const database = new SQLite(file);
  fs.chmodSync(file, 0o600);
  setUpSqliteConnection(database);
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: withStatementCache(database) }) });
  return {
    db,
    dialect: "sqlite",
    changes: localChangeFeed(),
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
  const prepare = cachedPrepare(database, 500, busyAware);
  return new Proxy(database, {
    get(target, property, receiver) {
      if (property === "prepare") return prepare;
      const value = Reflect.get(target, property, receiver) as unknown;
      // Native methods need the real Database as `this`.
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

/** The connection's `prepare`, keeping up to `max` statements (each as `wrap` makes it) by their SQL. */
export function cachedPrepare(
  database: import("better-sqlite3").Database,
  max: number,
  wrap: (statement: import("better-sqlite3").Statement) => import("better-sqlite3").Statement = (statement) => statement,
): (sql: string) => import("better-sqlite3").Statement {
  const cache = new Map<string, import("better-sqlite3").Statement>();
  return (sql) => {
    let statement = cache.get(sql);
    if (!statement) {
      statement = wrap(database.prepare(sql));
      if (cache.size >= max) cache.delete(cache.keys().next().value!);
      cache.set(sql, statement);
    }
    return statement;
  };
}

/** The statement, with SQLite's lock timeouts thrown as StoreBusyError. */
function busyAware(statement: import("better-sqlite3").Statement): import("better-sqlite3").Statement {
  const wrap =
    <A extends unknown[], R>(run: (...args: A) => R) =>
    (...args: A): R => {
      try {
        return run(...args);
      } catch (error) {
        throw busyOr(error, SQLITE_BUSY_CODES);
      }
    };
  return new Proxy(statement, {
    get(target, property) {
      const value = Reflect.get(target, property, target) as unknown;
      if (property === "all" || property === "run" || property === "get" || property === "iterate") {
        return wrap((value as (...args: unknown[]) => unknown).bind(target));
      }
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

/** Connections kept open from the start, so a burst does not begin with connects. */
const PG_WARM_CONNECTIONS = 4;

async function openPostgres(url: string): Promise<Store> {
  const pg = await import("pg");
  const { Pool, types } = pg.default;
  // BIGINT columns hold epoch milliseconds, far below 2^53: read them as numbers, not strings.
  const parseBigint = (value: string) => Number(value);
  const pool = new Pool({
    connectionString: url,
    max: 20,
    min: PG_WARM_CONNECTIONS,
    idleTimeoutMillis: 60_000,
    // A request waits this long for a connection, then answers store_busy (503, Retry-After).
    connectionTimeoutMillis: 10_000,
    types: {
      getTypeParser: ((oid: number, format?: "text" | "binary") =>
        oid === 20 ? parseBigint : types.getTypeParser(oid, format as "text")) as typeof types.getTypeParser,
    },
  });
  // Fail at start with a clear message instead of at the first request; the warm ones stay open.
  const clients = await Promise.all(Array.from({ length: PG_WARM_CONNECTIONS }, () => pool.connect())).catch(async (error: Error) => {
    await pool.end().catch(() => {});
    throw new Error(`Cannot connect to PostgreSQL (DATABASE_URL): ${error.message}`);
  });
  for (const client of clients) client.release();
  // An idle connection PostgreSQL dropped (a restart, a failover) is removed from the pool; without
  // a listener, its error would end the process.
  pool.on("error", () => {});
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: busyAwarePool(pool) }) });
  const where = new URL(url);
  const changes = await postgresChangeFeed(url);
  return {
    db,
    dialect: "postgres",
    location: `postgres://${where.host}${where.pathname}`,
    changes,
    async close() {
      await changes.close();
      await db.destroy();
    },
  };
}

/**
 * The pool as Kysely sees it: a connection that does not come within the wait, or a query
 * PostgreSQL gave up on as busy, is a StoreBusyError.
 */
function busyAwarePool(pool: import("pg").Pool): import("pg").Pool {
  const connect = async () => {
    let client: import("pg").PoolClient;
    try {
      client = await pool.connect();
    } catch (error) {
      throw new StoreBusyError(error);
    }
    return new Proxy(client, {
      get(target, property) {
        const value = Reflect.get(target, property, target) as unknown;
        if (property === "query") {
          return async (...args: unknown[]) => {
            try {
              return await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
            } catch (error) {
              throw busyOr(error, PG_BUSY_CODES);
            }
          };
        }
        return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
  };
  return new Proxy(pool, {
    get(target, property) {
      if (property === "connect") return connect;
      const value = Reflect.get(target, property, target) as unknown;
      return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}
