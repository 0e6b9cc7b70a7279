import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { CompiledQuery, Kysely } from "kysely";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openStore, type Store } from "../store/db.js";
import { migrateToLatest } from "../store/migrate.js";
import type { Database, RunRow } from "../store/schema.js";
import type { SqliteWriter } from "../store/sqlite-writer.js";
import { RunJournal } from "./journal.js";

// The run journal's group commit on a real SQLite store: what is queued in one turn of the event
// loop commits in one transaction, and every caller waits for its own record's commit.
let dir: string;
let store: Store;
let db: Kysely<Database>;
/** The batches the journal committed, by size, through a writer that runs them on `db`. */
let batches: number[];
/** When set, the next batch fails as a busy disk would. */
let failNext: Error | undefined;
/** When set, every batch fails with it (a database out of reach for a while). */
let failing: Error | undefined;
let journal: RunJournal;

const countingWriter = {
  async transaction(queries: CompiledQuery[]): Promise<void> {
    batches.push(queries.length);
    if (failing) throw failing;
    if (failNext) {
      const error = failNext;
      failNext = undefined;
      throw error;
    }
    await db.transaction().execute(async (trx) => {
      for (const query of queries) await trx.executeQuery(query);
    });
  },
} as unknown as SqliteWriter;

const startRow = (id: string): RunRow => ({
  id,
  workspace_id: "ws",
  worker_id: "w1",
  deployment_id: "d1",
  capability_key: "tool",
  status: "running",
  exit_code: null,
  started_at: 1000,
  ended_at: null,
  duration_ms: null,
  error: null,
  logs: null,
  delivery_id: null,
});
const end = { status: "succeeded" as const, exit_code: 0, ended_at: 1005, duration_ms: 5, error: null, logs: "ok" };
const statusOf = async (id: string) => (await db.selectFrom("runs").select("status").where("id", "=", id).executeTakeFirst())?.status;

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "wy-journal-"));
  store = await openStore({ dataDir: dir });
  db = store.db;
  await migrateToLatest(db, "sqlite");
  await db.insertInto("workspaces").values({ id: "ws", name: "W", created_at: 1, sandbox_index: 1 }).execute();
  await db.insertInto("workers").values({ id: "w1", workspace_id: "ws", name: "w1", created_at: 1, updated_at: 1, live_deployment_id: null, secrets_version: 0 }).execute();
  batches = [];
  failNext = undefined;
  failing = undefined;
  // Interval 0: a commit per turn of the event loop, so the tests can tell batches apart.
  journal = new RunJournal(db, countingWriter, 0);
});

afterEach(async () => {
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Waits, a turn of the event loop at a time (bounded), until `check` holds. */
async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 1));
  expect(check()).toBe(true);
}

describe("RunJournal", () => {
  it("commits the starts queued in one turn in one transaction, and each caller sees its row committed", async () => {
    const ids = Array.from({ length: 50 }, (_, i) => `r${i}`);
    await Promise.all(
      ids.map(async (id) => {
        await journal.start(startRow(id));
        // Committed by the time the caller's promise settles.
        expect(await statusOf(id)).toBe("running");
      }),
    );
    expect(batches).toEqual([50]);
  });

  it("a start and its finish queued together land in one commit, in order", async () => {
    await Promise.all([journal.start(startRow("r1")), journal.finish("r1", end)]);
    expect(batches).toEqual([2]);
    expect(await statusOf("r1")).toBe("succeeded");
  });

  it("what is queued while a commit is in progress goes into the next one", async () => {
    const first = journal.start(startRow("r1"));
    // Queued once the first batch was taken.
    await until(() => batches.length === 1);
    const second = Promise.all([journal.finish("r1", end), journal.start(startRow("r2"))]);
    await Promise.all([first, second]);
    expect(batches).toEqual([1, 2]);
    expect(await statusOf("r1")).toBe("succeeded");
    expect(await statusOf("r2")).toBe("running");
  });

  it("a failed batch commits its records one by one: only a record that fails alone fails, and the journal keeps committing", async () => {
    failNext = new Error("SQLITE_BUSY: database is locked");
    const outcomes = await Promise.allSettled([journal.start(startRow("r1")), journal.whole({ ...startRow("r2"), ...end })]);
    expect(outcomes.map((o) => o.status)).toEqual(["fulfilled", "fulfilled"]);
    expect(batches).toEqual([2, 1, 1]);
    // A run of a worker deleted meanwhile fails alone; the other record of its batch is kept.
    const orphan = { ...startRow("r3"), worker_id: "deleted-worker", ...end };
    const mixed = await Promise.allSettled([journal.whole(orphan), journal.whole({ ...startRow("r4"), ...end })]);
    expect(mixed.map((o) => o.status)).toEqual(["rejected", "fulfilled"]);
    expect(await statusOf("r3")).toBeUndefined();
    expect(await statusOf("r4")).toBe("succeeded");
  });

  it("a database busy or out of reach loses nothing: the batch is tried again, whole and in order, once it answers", async () => {
    const retrying = new RunJournal(db, countingWriter, 0, { retryMs: 20 });
    failing = Object.assign(new Error("database is locked"), { code: "SQLITE_BUSY" });
    const outcomes = Promise.allSettled([retrying.start(startRow("t1")), retrying.finish("t1", end), retrying.whole({ ...startRow("t2"), ...end })]);
    await until(() => batches.length >= 3);
    expect(await statusOf("t1")).toBeUndefined();
    failing = undefined;
    expect((await outcomes).map((o) => o.status)).toEqual(["fulfilled", "fulfilled", "fulfilled"]);
    expect(await statusOf("t1")).toBe("succeeded");
    expect(await statusOf("t2")).toBe("succeeded");
    // Every try held the whole batch (no record went alone, none was dropped).
    expect(new Set(batches)).toEqual(new Set([3]));
  });

  it("holds at most maxBacklog records (full: the run service refuses new runs), and gives a record up after retryForMs", async () => {
    let clock = 0;
    const bounded = new RunJournal(db, countingWriter, 0, { retryMs: 5, retryForMs: 1000, maxBacklog: 3 }, () => clock);
    failing = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" });
    const first = bounded.whole({ ...startRow("b1"), ...end });
    const rest = [bounded.whole({ ...startRow("b2"), ...end }), bounded.whole({ ...startRow("b3"), ...end })];
    await until(() => batches.length >= 2);
    expect(bounded.full).toBe(true);
    clock = 1001;
    // Tried for longer than retryForMs: given up, with the database's error.
    await expect(first).rejects.toThrow("ECONNREFUSED");
    await Promise.allSettled(rest);
    expect(bounded.full).toBe(false);
    failing = undefined;
    await bounded.whole({ ...startRow("b4"), ...end });
    expect(await statusOf("b4")).toBe("succeeded");
  });

  it("settled() resolves once everything queued before it is committed, across batches and failures", async () => {
    expect(await journal.settled()).toBeUndefined();
    failNext = new Error("SQLITE_BUSY: database is locked");
    // Not awaited, as the run service does: the answer goes out before the commit.
    void journal.whole({ ...startRow("r1"), ...end }).catch(() => {});
    await until(() => batches.length === 1);
    void journal.whole({ ...startRow("r2"), ...end });
    void journal.start(startRow("r3"));
    expect(await statusOf("r2")).toBeUndefined();
    await journal.settled();
    expect(await statusOf("r1")).toBeUndefined();
    expect(await statusOf("r2")).toBe("succeeded");
    expect(await statusOf("r3")).toBe("running");
    expect(batches).toEqual([1, 2]);
  });

  it("without a writer, a batch of rows only is one multi-row insert: all of them or none", async () => {
    const direct = new RunJournal(db, undefined, 0);
    await Promise.all([direct.whole({ ...startRow("m1"), ...end }), direct.start(startRow("m2")), direct.whole({ ...startRow("m3"), ...end })]);
    expect([await statusOf("m1"), await statusOf("m2"), await statusOf("m3")]).toEqual(["succeeded", "running", "succeeded"]);
    // A batch holding an id already recorded fails as a statement; its records then go one by one.
    const outcomes = await Promise.allSettled([direct.whole({ ...startRow("m4"), ...end }), direct.whole({ ...startRow("m1"), ...end })]);
    expect(outcomes.map((o) => o.status)).toEqual(["fulfilled", "rejected"]);
    expect(await statusOf("m4")).toBe("succeeded");
  });

  it("commits what is queued within its interval together, and settled() commits at once", async () => {
    const slow = new RunJournal(db, countingWriter, 60_000);
    const first = slow.whole({ ...startRow("i1"), ...end });
    await new Promise((resolve) => setTimeout(resolve, 20));
    const second = slow.whole({ ...startRow("i2"), ...end });
    await new Promise((resolve) => setTimeout(resolve, 20));
    // A minute's interval: nothing committed yet...
    expect(batches).toEqual([]);
    expect(await statusOf("i1")).toBeUndefined();
    // ...until a reader asks: both, in one commit, without waiting out the interval.
    await slow.settled();
    await Promise.all([first, second]);
    expect(batches).toEqual([2]);
    expect(await statusOf("i2")).toBe("succeeded");
  });

  it("without a writer (PostgreSQL's path) commits through the database handle, one transaction per batch", async () => {
    const direct = new RunJournal(db, undefined, 0);
    await Promise.all([direct.start(startRow("p1")), direct.start(startRow("p2")), direct.finish("p1", end)]);
    expect(await statusOf("p1")).toBe("succeeded");
    expect(await statusOf("p2")).toBe("running");
  });
});
