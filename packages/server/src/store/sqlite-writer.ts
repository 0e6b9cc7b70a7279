import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import type { CompiledQuery } from "kysely";
import { setUpSqliteConnection } from "./db.js";

/**
 * A second SQLite connection on a thread of its own, for write-heavy work that must be durable but
 * must not stall the server: better-sqlite3 is synchronous, so a commit's fsync (hundreds of
 * microseconds) would otherwise block every request. Queries are compiled by Kysely on the main
 * thread and executed here, a batch per transaction; batches queue while a commit is in progress,
 * so they grow with the load (group commit). The connection is set up as the store's is
 * (setUpSqliteConnection).
 */
export class SqliteWriter {
  private readonly worker: Worker;
  private nextId = 0;
  private readonly pending = new Map<number, { resolve(): void; reject(error: Error): void }>();

  constructor(file: string) {
    const sqlite = createRequire(import.meta.url).resolve("better-sqlite3");
    // Inline CommonJS: the thread needs no file of ours, wherever the server runs from.
    this.worker = new Worker(
      `
      const { parentPort, workerData } = require("node:worker_threads");
      const Database = require(workerData.sqlite);
      const db = new Database(workerData.file);
      (${setUpSqliteConnection.toString()})(db);
      const statements = new Map();
      const prepared = (sql) => {
        let s = statements.get(sql);
        if (!s) { s = db.prepare(sql); statements.set(sql, s); }
        return s;
      };
      const inTransaction = db.transaction((queries) => { for (const q of queries) prepared(q.sql).run(...q.parameters); });
      parentPort.on("message", (message) => {
        if (message === "close") { db.close(); parentPort.close(); return; }
        try { inTransaction(message.queries); parentPort.postMessage({ id: message.id }); }
        catch (error) { parentPort.postMessage({ id: message.id, error: String(error && error.message || error) }); }
      });
      `,
      { eval: true, workerData: { sqlite, file } },
    );
    this.worker.on("message", (message: { id: number; error?: string }) => {
      const entry = this.pending.get(message.id);
      this.pending.delete(message.id);
      if (message.error) entry?.reject(new Error(message.error));
      else entry?.resolve();
    });
    this.worker.on("error", (error) => {
      for (const entry of this.pending.values()) entry.reject(error);
      this.pending.clear();
    });
    this.worker.unref();
  }

  /** Runs the queries in one transaction on the writer's connection; resolves once committed. */
  transaction(queries: CompiledQuery[]): Promise<void> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, queries: queries.map((q) => ({ sql: q.sql, parameters: [...q.parameters] })) });
    });
  }

  async close(): Promise<void> {
    // Referenced again, so the event loop waits for the thread to close its connection.
    this.worker.ref();
    this.worker.postMessage("close");
    await new Promise((resolve) => this.worker.once("exit", resolve));
  }
}
