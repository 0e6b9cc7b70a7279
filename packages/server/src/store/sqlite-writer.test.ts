import { afterEach, beforeEach, describe, expect, it } from "vitest";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import SQLite from "better-sqlite3";
import { openStore, setUpSqliteConnection, StoreBusyError, type Store } from "./db.js";
import { migrateToLatest } from "./migrate.js";
import { runInsert } from "./runs.js";
import type { RunRow } from "./schema.js";
import { Kysely } from "kysely";
import type { Database } from "./schema.js";
import { SqliteWriter, writerDialect } from "./sqlite-writer.js";

let dir: string;
let store: Store;
let writer: SqliteWriter;

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "wy-writer-"));
  store = await openStore({ dataDir: dir });
  await migrateToLatest(store.db, "sqlite");
  await store.db.insertInto("workspaces").values({ id: "ws", name: "W", created_at: 1, sandbox_index: 1 }).execute();
  await store.db.insertInto("workers").values({ id: "w1", workspace_id: "ws", name: "w1", created_at: 1, updated_at: 1, live_deployment_id: null, secrets_version: 0 }).execute();
  writer = new SqliteWriter(store.sqliteFile!);
});

afterEach(async () => {
  await writer.close();
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const run = (id: string, workerId: string): RunRow => ({
  id,
  workspace_id: "ws",
  worker_id: workerId,
  deployment_id: "d1",
  capability_key: "hello",
  status: "succeeded",
  exit_code: 0,
  started_at: 10,
  ended_at: 12,
  duration_ms: 2,
  error: null,
  logs: "",
  delivery_id: null,
});

describe("the SQLite connection setup", () => {
  const settings = (database: SQLite.Database) => ({
    journal_mode: database.pragma("journal_mode", { simple: true }),
    synchronous: database.pragma("synchronous", { simple: true }),
    foreign_keys: database.pragma("foreign_keys", { simple: true }),
    busy_timeout: database.pragma("busy_timeout", { simple: true }),
  });
  const expected = { journal_mode: "wal", synchronous: 2, foreign_keys: 1, busy_timeout: 5000 };

  it("sets WAL, synchronous FULL, foreign keys and the lock wait", () => {
    const database = new SQLite(path.join(dir, "direct.db"));
    try {
      setUpSqliteConnection(database);
      expect(settings(database)).toEqual(expected);
    } finally {
      database.close();
    }
  });

  it("runs from its source text alone, as the writer thread runs it", () => {
    const database = new SQLite(path.join(dir, "from-source.db"));
    try {
      // A fresh scope with no module around it, like the thread's inline script.
      new Function("db", `(${setUpSqliteConnection.toString()})(db);`)(database);
      expect(settings(database)).toEqual(expected);
    } finally {
      database.close();
    }
  });
});

describe("the SQLite writer thread's connection", () => {
  it("commits a batch that the store's connection then reads", async () => {
    await writer.transaction([runInsert.compile(store.db, run("r1", "w1")), runInsert.compile(store.db, run("r2", "w1"))]);
    expect((await store.db.selectFrom("runs").select("id").orderBy("id").execute()).map((r) => r.id)).toEqual(["r1", "r2"]);
  });

  it("is set up as the store's is: foreign keys enforced, the whole batch refused", async () => {
    const batch = [runInsert.compile(store.db, run("r1", "w1")), runInsert.compile(store.db, run("r2", "no-such-worker"))];
    await expect(writer.transaction(batch)).rejects.toThrow(/FOREIGN KEY/);
    expect(await store.db.selectFrom("runs").select("id").execute()).toEqual([]);
  });

  it("waits for a write lock another connection holds briefly (busy_timeout)", async () => {
    const other = new SQLite(store.sqliteFile!);
    try {
      other.exec("BEGIN IMMEDIATE");
      const committed = writer.transaction([runInsert.compile(store.db, run("r1", "w1"))]);
      await new Promise((resolve) => setTimeout(resolve, 300));
      other.exec("COMMIT");
      await committed;
    } finally {
      other.close();
    }
    expect(await store.db.selectFrom("runs").select("id").execute()).toEqual([{ id: "r1" }]);
  });

  it("commits what arrives together in one go, each message on its own: one that fails fails alone", async () => {
    const good = writer.transaction([runInsert.compile(store.db, run("r1", "w1"))]);
    const bad = writer.transaction([runInsert.compile(store.db, run("r2", "w1")), runInsert.compile(store.db, run("r3", "no-such-worker"))]);
    const writes = new Kysely<Database>({ dialect: writerDialect(writer) });
    const inserted = writes.insertInto("runs").values(run("r4", "w1")).executeTakeFirst();
    const duplicate = writes.insertInto("runs").values(run("r1", "w1")).execute();
    const updated = writes.updateTable("runs").set({ logs: "changed" }).where("worker_id", "=", "w1").returning(["id", "logs"]).execute();
    await expect(good).resolves.toBeUndefined();
    await expect(bad).rejects.toThrow(/FOREIGN KEY/);
    expect(Number((await inserted).numInsertedOrUpdatedRows)).toBe(1);
    await expect(duplicate).rejects.toMatchObject({ code: "SQLITE_CONSTRAINT_PRIMARYKEY" });
    // In order: the update sees the rows committed before it in the same batch.
    expect((await updated).sort((a, b) => a.id.localeCompare(b.id))).toEqual([
      { id: "r1", logs: "changed" },
      { id: "r4", logs: "changed" },
    ]);
    expect((await store.db.selectFrom("runs").select("id").orderBy("id").execute()).map((r) => r.id)).toEqual(["r1", "r4"]);
  });

  it("answers a write lock held past the wait as the store's busy error (503), not as a bug", async () => {
    const other = new SQLite(store.sqliteFile!);
    try {
      other.exec("BEGIN IMMEDIATE");
      const writes = new Kysely<Database>({ dialect: writerDialect(writer) });
      const error = await writes.insertInto("runs").values(run("r1", "w1")).execute().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(StoreBusyError);
      expect(error).toMatchObject({ status: 503 });
    } finally {
      other.exec("ROLLBACK");
      other.close();
    }
  }, 15_000);

  it("gives BLOBs back as Buffers, and binds them", async () => {
    const writes = new Kysely<Database>({ dialect: writerDialect(writer) });
    const sealed = Buffer.from([0, 1, 2, 254, 255]);
    await writes
      .insertInto("webhooks")
      .values({ worker_id: "w1", key: "hook", workspace_id: "ws", secret_hash: "h", secret_key_id: "k", secret_sealed: sealed, verification_enabled: 1, verification_failures: 0, blocked_at: null, created_at: 1, updated_at: 1 })
      .execute();
    const [row] = await writes.updateTable("webhooks").set({ updated_at: 2 }).returning("secret_sealed").execute();
    expect(Buffer.isBuffer(row!.secret_sealed)).toBe(true);
    expect(row!.secret_sealed.equals(sealed)).toBe(true);
  });

  it("commits a flood in several transactions, answering every message; a close commits what is queued first", async () => {
    const flood = Array.from({ length: 1_200 }, (_, i) => writer.transaction([runInsert.compile(store.db, run(`r${i}`, "w1"))]));
    await Promise.all(flood);
    expect((await store.db.selectFrom("runs").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow()).n).toBe(1_200);
    const late = Array.from({ length: 700 }, (_, i) => writer.transaction([runInsert.compile(store.db, run(`late${i}`, "w1"))]));
    await writer.close();
    await Promise.all(late);
    expect((await store.db.selectFrom("runs").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow()).n).toBe(1_900);
    writer = new SqliteWriter(store.sqliteFile!);
  });

  it("leaves the database in WAL mode", async () => {
    await writer.transaction([runInsert.compile(store.db, run("r1", "w1"))]);
    expect(fs.existsSync(`${store.sqliteFile!}-wal`)).toBe(true);
  });
});
