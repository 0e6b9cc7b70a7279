import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import {
  SqliteAdapter,
  SqliteIntrospector,
  SqliteQueryCompiler,
  type CompiledQuery,
  type DatabaseConnection,
  type Dialect,
  type Driver,
  type Kysely,
  type QueryResult,
} from "kysely";
import { cachedPrepare, setUpSqliteConnection, sqliteBusyOr } from "./db.js";
import { InlineConnection, type OneResult } from "./sqlite-inline.js";

/**
 * A second SQLite connection on a thread of its own, for write-heavy work that must be durable but
 * must not stall the server: better-sqlite3 is synchronous, so a commit's fsync (hundreds of
 * microseconds) would otherwise block every request. Queries are compiled by Kysely on the main
 * thread and executed here; whatever arrives while a commit is in progress is committed together
 * (group commit: one fsync for the lot), each message in a savepoint of its own. The connection is set up as the store's is
 * (setUpSqliteConnection).
 */
export class SqliteWriter {
  private readonly worker: Worker;
  private nextId = 0;
  private readonly pending = new Map<number, { resolve(result: OneResult | undefined): void; reject(error: Error): void }>();
  /** The connection for single statements run on the server's thread while this one is idle. */
  private inline?: InlineConnection;

  constructor(private readonly file: string) {
    const sqlite = createRequire(import.meta.url).resolve("better-sqlite3");
    // Inline CommonJS: the thread needs no file of ours, wherever the server runs from.
    this.worker = new Worker(
      `
      const { parentPort, workerData } = require("node:worker_threads");
      const Database = require(workerData.sqlite);
      const db = new Database(workerData.file);
      (${setUpSqliteConnection.toString()})(db);
      const prepared = (${cachedPrepare.toString()})(db, 200);
      // Buffers arrive as Uint8Arrays (structured clone); SQLite binds Buffers as BLOBs.
      const bound = (parameters) => parameters.map((p) => (p instanceof Uint8Array && !Buffer.isBuffer(p) ? Buffer.from(p.buffer, p.byteOffset, p.byteLength) : p));
      const one = (q) => {
        const statement = prepared(q.sql);
        if (statement.reader) return { rows: statement.all(...bound(q.parameters)) };
        const { changes } = statement.run(...bound(q.parameters));
        return { rows: [], changes };
      };
      // Each message in a savepoint of its own (a nested transaction): one that fails fails alone.
      const each = db.transaction((message) => {
        if (message.query) return one(message.query);
        for (const q of message.queries) prepared(q.sql).run(...bound(q.parameters));
        return undefined;
      });
      const failure = (id, error) => ({ id, error: String((error && error.message) || error), code: error && error.code });
      // Every message that came in while the last commit was under way, in one transaction: one
      // fsync for the lot (group commit); each is answered once it is committed.
      // SQLite may roll the whole transaction back by itself (a full disk, an I/O error): the
      // messages after that are not run (they would commit on their own), and all fail.
      const batch = db.transaction((messages) => {
        const replies = [];
        for (const m of messages) {
          if (!db.inTransaction) throw new Error("the batch's transaction was rolled back");
          try { replies.push({ id: m.id, result: each(m) }); } catch (error) { replies.push(failure(m.id, error)); }
        }
        if (!db.inTransaction) throw new Error("the batch's transaction was rolled back");
        return replies;
      });
      // A batch of writes that may be lost to a power failure (never to a crash of the process)
      // commits without an fsync; the next durable commit's fsync covers it, and a loss always
      // leaves the state of some earlier commit (WAL). The pragma holds outside transactions only.
      let durable = true;
      const synchronous = (wanted) => {
        if (wanted !== durable) { db.pragma(wanted ? "synchronous = FULL" : "synchronous = NORMAL"); durable = wanted; }
      };
      let queue = [];
      // At most this many messages per transaction: a flood is committed in several, each answered
      // as it commits, instead of one transaction that holds the lock and every answer for long.
      const MAX_BATCH = 500;
      const flush = () => {
        if (queue.length === 0 || !db.open) return;
        const messages = queue.slice(0, MAX_BATCH);
        queue = queue.slice(MAX_BATCH);
        if (queue.length > 0) setImmediate(flush);
        synchronous(messages.some((m) => m.durable !== false));
        let replies;
        // Immediate: the write lock is taken at BEGIN, so a batch never fails half-way on a lock
        // another connection took after it began reading.
        try { replies = batch.immediate(messages); } catch (error) { replies = messages.map((m) => failure(m.id, error)); }
        // A transaction left open by a failed rollback would swallow the next batch's commits.
        if (db.inTransaction) { try { db.exec("ROLLBACK"); } catch {} }
        for (const reply of replies) parentPort.postMessage(reply);
      };
      parentPort.on("message", (message) => {
        if (message === "close") { while (queue.length > 0) flush(); db.close(); parentPort.close(); return; }
        queue.push(message);
        if (queue.length === 1) setImmediate(flush);
      });
      `,
      { eval: true, workerData: { sqlite, file } },
    );
    this.worker.on("message", (message: { id: number; error?: string; code?: string; result?: OneResult }) => {
      const entry = this.pending.get(message.id);
      this.pending.delete(message.id);
      // The code (SQLITE_BUSY, SQLITE_CONSTRAINT...) goes with it; a lock timeout is the store's
      // busy error (503 with Retry-After), as on the main connection.
      if (message.error) entry?.reject(sqliteBusyOr(Object.assign(new Error(message.error), message.code ? { code: message.code } : {})) as Error);
      else entry?.resolve(message.result);
    });
    this.worker.on("error", (error) => this.failPending(error));
    // A thread that ended (closed, or died) answers nothing more: what waits on it fails.
    this.worker.on("exit", () => {
      this.gone = true;
      this.failPending(new Error("The SQLite writer thread has stopped."));
    });
    this.worker.unref();
  }

  private gone = false;
  /** Closing: nothing more runs on the server's thread. */
  private closing = false;

  private failPending(error: Error): void {
    for (const entry of this.pending.values()) entry.reject(error);
    this.pending.clear();
  }

  /** Runs the queries in one transaction on the writer's connection; resolves once committed. */
  async transaction(queries: CompiledQuery[]): Promise<void> {
    await this.send({ queries: queries.map(plain) });
  }

  /**
   * Runs one query, committed on its own; its rows, or the rows it changed. Not `durable`: it may
   * be undone by a power failure (never by a crash of the process), for writes whose loss only
   * repeats work.
   *
   * A query that comes alone (nothing for the thread to do, no commit waiting for the disk) runs
   * at once on the server's thread, and a durable one then waits for a sync of the log
   * (sqlite-inline.ts): alone, a hand-off to the thread and back costs more than the commit (a
   * webhook's 202 at one sender: ~1 ms through the thread on a busy 2-vCPU machine against
   * ~0.4 ms). Queries that come together go to the thread, which commits them at once off the
   * server's thread; so does one that finds the lock held.
   */
  async execute(query: CompiledQuery, options: { durable?: boolean } = {}): Promise<OneResult> {
    const durable = options.durable ?? true;
    // A durable one while others wait for the disk joins the thread's group commit instead.
    if (!this.gone && !this.closing && this.pending.size === 0 && !(durable && this.inline?.syncing) && !this.inline?.failed) {
      this.inline ??= new InlineConnection(this.file);
      const result = this.inline.tryExecute(query);
      if (result) {
        if (durable) await this.inline.synced();
        return result;
      }
    }
    return (await this.send({ query: plain(query), durable })) ?? { rows: [] };
  }

  /** A message to the thread, answered once what it carries is committed (or failed). */
  private send(message: { queries: PlainQuery[] } | { query: PlainQuery; durable: boolean }): Promise<OneResult | undefined> {
    if (this.gone) return Promise.reject(new Error("The SQLite writer thread has stopped."));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, ...message });
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.inline?.close();
    this.inline = undefined;
    // Referenced again, so the event loop waits for the thread to close its connection.
    this.worker.ref();
    this.worker.postMessage("close");
    await new Promise((resolve) => this.worker.once("exit", resolve));
  }
}


interface PlainQuery {
  sql: string;
  parameters: unknown[];
}

/** A compiled query as the thread takes it (structured clone keeps no class). */
const plain = (query: CompiledQuery): PlainQuery => ({ sql: query.sql, parameters: [...query.parameters] });

/**
 * Kysely over the writer's connection: single statements, each committed (and fsynced) on the
 * writer thread, so the server's thread never waits for a commit. For writes that come with every
 * request of a hot path (a webhook delivery's insert, its claim and its end) and need their result;
 * batches go through `transaction`. Transactions are refused: statements of others would join them.
 * With `durable: false` its commits do not wait for the disk (`execute`).
 */
export function writerDialect(writer: SqliteWriter, options: { durable?: boolean } = {}): Dialect {
  const connection: DatabaseConnection = {
    async executeQuery<R>(query: CompiledQuery): Promise<QueryResult<R>> {
      const result = await writer.execute(query, options);
      return { rows: result.rows.map(withBuffers) as R[], ...(result.changes === undefined ? {} : { numAffectedRows: BigInt(result.changes) }) };
    },
    // eslint-disable-next-line require-yield
    async *streamQuery() {
      throw new Error("The writer's connection does not stream.");
    },
  };
  const noTransactions = async () => {
    throw new Error("The writer's connection takes single statements, not transactions.");
  };
  const driver: Driver = {
    init: async () => {},
    acquireConnection: async () => connection,
    beginTransaction: noTransactions,
    commitTransaction: noTransactions,
    rollbackTransaction: noTransactions,
    releaseConnection: async () => {},
    destroy: async () => {},
  };
  return {
    createAdapter: () => new SqliteAdapter(),
    createDriver: () => driver,
    createQueryCompiler: () => new SqliteQueryCompiler(),
    createIntrospector: (db: Kysely<any>) => new SqliteIntrospector(db),
  };
}

/** A row from the thread with its BLOBs as Buffers again (they arrive as Uint8Arrays). */
function withBuffers(row: unknown): unknown {
  if (row === null || typeof row !== "object") return row;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(row)) {
    out[key] = value instanceof Uint8Array && !Buffer.isBuffer(value) ? Buffer.from(value.buffer, value.byteOffset, value.byteLength) : value;
  }
  return out;
}
