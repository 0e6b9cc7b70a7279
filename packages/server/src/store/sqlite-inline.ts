import fs from "node:fs";
import { createRequire } from "node:module";
import type { CompiledQuery } from "kysely";
import { cachedPrepare, setUpSqliteConnection } from "./db.js";

/** What a statement gave: its rows, or how many rows it changed. */
export interface OneResult {
  rows: unknown[];
  changes?: number;
}

/**
 * A SQLite connection on the server's thread for single statements that must not wait: it runs a
 * statement only if the write lock is free at once (else the caller sends it to the writer
 * thread, which waits), and commits without waiting for the disk. What must survive a power
 * failure waits for `synced()` after its commit: an fdatasync of the write-ahead log on libuv's
 * thread pool, shared by every commit made before it began (group commit), so neither the commit
 * nor the disk stalls the server's thread.
 *
 * Why this is as safe as synchronous=FULL: in WAL mode a commit appends its frames to the log
 * (synchronous=NORMAL keeps the database consistent whatever a power failure leaves, and only
 * loses the commits that no sync covered); a sync of the log file that began after the commit
 * returned makes it durable, which is all FULL does at commit (SQLite syncs the log before a
 * checkpoint copies it, and restarts it only after that). The log is the same file for as long as
 * a connection is open, this one included (its inode is checked once a second all the same).
 */
export class InlineConnection {
  private readonly db: import("better-sqlite3").Database;
  private readonly prepare: (sql: string) => import("better-sqlite3").Statement;
  private readonly log: WalSync;

  constructor(file: string) {
    const Database = createRequire(import.meta.url)("better-sqlite3") as typeof import("better-sqlite3");
    this.db = new Database(file);
    setUpSqliteConnection(this.db);
    this.db.pragma("synchronous = NORMAL");
    // Never wait for the lock here: the wait would block the very thread that may hold it (a
    // transaction of the store's connection in progress across an await).
    this.db.pragma("busy_timeout = 0");
    // Checkpoints (copying the log into the database, milliseconds at times) are left to the
    // other connections, which make one every 1,000 pages: one here would stall the server's
    // thread. Past 10,000 pages (nothing else writes), this one does, so the log stays bounded.
    this.db.pragma("wal_autocheckpoint = 10000");
    this.log = new WalSync(`${file}-wal`);
    this.prepare = cachedPrepare(this.db, 100);
  }

  /** The statement's result, committed; undefined when another connection holds the lock. */
  tryExecute(query: CompiledQuery): OneResult | undefined {
    try {
      // Preparing reads the schema, which may find the lock held too.
      const statement = this.prepare(query.sql);
      if (statement.reader) return { rows: statement.all(...query.parameters) };
      return { rows: [], changes: statement.run(...query.parameters).changes };
    } catch (error) {
      if (String((error as { code?: unknown }).code).startsWith("SQLITE_BUSY")) return undefined;
      throw error;
    }
  }

  /** Whether a commit here waits for the disk now (writes are coming in at once). */
  get syncing(): boolean {
    return this.log.inFlight !== undefined;
  }

  /**
   * Whether a sync of the log failed: the kernel may have dropped what it could not write, and a
   * later sync may then succeed over the hole. Nothing more may be committed here (the caller
   * sends everything to the thread, whose syncs are SQLite's own).
   */
  get failed(): boolean {
    return this.log.failed;
  }

  /** Resolves once what this connection committed so far is on disk. */
  synced(): Promise<void> {
    return this.log.after();
  }

  /** Closes the connection, and the log's descriptor once no sync uses it any more. */
  async close(): Promise<void> {
    this.db.close();
    await this.log.close();
  }
}

/** fdatasync of a file, shared: each caller waits for one that began after it called. */
class WalSync {
  private fd?: number;
  private ino?: number;
  private checkedAt = 0;
  inFlight?: Promise<void>;
  private queued?: Promise<void>;
  failed = false;
  private closed = false;

  constructor(private readonly path: string) {}

  after(): Promise<void> {
    if (!this.inFlight) return this.begin();
    // The sync under way may have begun before the caller's commit: the next one covers it, and
    // covers every caller that comes meanwhile.
    this.queued ??= this.inFlight
      .catch(() => {})
      .then(() => {
        this.queued = undefined;
        return this.begin();
      });
    return this.queued;
  }

  private begin(): Promise<void> {
    const sync = new Promise<void>((resolve, reject) => {
      if (this.closed) throw new Error("The log's sync is closed.");
      fs.fdatasync(this.open(), (error) => {
        if (error) this.failed = true;
        return error ? reject(error) : resolve();
      });
    }).finally(() => {
      if (this.inFlight === sync) this.inFlight = undefined;
    });
    this.inFlight = sync;
    return sync;
  }

  /** The log's descriptor, opened again if the file is another one now (checked once a second). */
  private open(): number {
    if (this.fd !== undefined && Date.now() - this.checkedAt < 1000) return this.fd;
    const ino = fs.statSync(this.path).ino;
    this.checkedAt = Date.now();
    if (this.fd !== undefined && this.ino === ino) return this.fd;
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = fs.openSync(this.path, "r");
    this.ino = fs.fstatSync(this.fd).ino;
    return this.fd;
  }

  /** After the syncs under way and queued (a descriptor closed under one could be reused by another file). */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([this.inFlight, this.queued]);
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }
}
