import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import SQLite from "better-sqlite3";
import { Kysely } from "kysely";
import { openStore, type Store } from "./db.js";
import { migrateToLatest } from "./migrate.js";
import type { Database } from "./schema.js";
import { InlineConnection } from "./sqlite-inline.js";
import { SqliteWriter, writerDialect } from "./sqlite-writer.js";

let dir: string;
let store: Store;

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "wy-inline-"));
  store = await openStore({ dataDir: dir });
  await migrateToLatest(store.db, "sqlite");
  await store.db.insertInto("workspaces").values({ id: "ws", name: "W", created_at: 1, sandbox_index: 1 }).execute();
});

afterEach(async () => {
  vi.restoreAllMocks();
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const worker = (id: string) => ({ id, workspace_id: "ws", name: id, created_at: 1, updated_at: 1, live_deployment_id: null, secrets_version: 0 });

/** Every fdatasync the process makes from now on: the file it synced, and when its callback ran. */
function watchSyncs() {
  const syncs: { file: string; done: boolean }[] = [];
  const real = fs.fdatasync;
  vi.spyOn(fs, "fdatasync").mockImplementation(((fd: number, callback: (error: NodeJS.ErrnoException | null) => void) => {
    const entry = { file: fs.readlinkSync(`/proc/self/fd/${fd}`), done: false };
    syncs.push(entry);
    real(fd, (error) => {
      entry.done = true;
      callback(error);
    });
  }) as typeof fs.fdatasync);
  return syncs;
}

describe("a write on the server's thread (InlineConnection)", () => {
  it("commits at once, and is durable only once a sync of the log that began after it is done", async () => {
    const syncs = watchSyncs();
    const inline = new InlineConnection(store.sqliteFile!);
    try {
      const insert = store.db.insertInto("workers").values(worker("w1")).compile();
      expect(inline.tryExecute(insert)).toEqual({ rows: [], changes: 1 });
      // Committed: another connection sees it before any sync.
      expect(await store.db.selectFrom("workers").select("id").execute()).toEqual([{ id: "w1" }]);
      expect(syncs).toEqual([]);
      await inline.synced();
      expect(syncs).toEqual([{ file: fs.realpathSync(`${store.sqliteFile!}-wal`), done: true }]);
    } finally {
      await inline.close();
    }
  });

  it("shares syncs between writes that come together: one under way, and one for all that came during it", async () => {
    const syncs = watchSyncs();
    const inline = new InlineConnection(store.sqliteFile!);
    try {
      const waits: Promise<void>[] = [];
      for (let i = 0; i < 20; i++) {
        inline.tryExecute(store.db.insertInto("workers").values(worker(`w${i}`)).compile());
        waits.push(inline.synced());
        expect(inline.syncing).toBe(true);
      }
      await Promise.all(waits);
      expect(syncs.length).toBe(2);
      expect(syncs.every((s) => s.done)).toBe(true);
      expect(inline.syncing).toBe(false);
    } finally {
      await inline.close();
    }
  });

  it("fails the writes that wait on a sync that failed", async () => {
    vi.spyOn(fs, "fdatasync").mockImplementation(((_fd: number, callback: (error: NodeJS.ErrnoException | null) => void) => {
      setImmediate(() => callback(Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" })));
    }) as typeof fs.fdatasync);
    const inline = new InlineConnection(store.sqliteFile!);
    try {
      inline.tryExecute(store.db.insertInto("workers").values(worker("w1")).compile());
      await expect(inline.synced()).rejects.toMatchObject({ code: "EIO" });
      // The kernel may have dropped what it could not write: this connection commits nothing more.
      expect(inline.failed).toBe(true);
    } finally {
      await inline.close();
    }
  });

  it("closes the log's descriptor only once the sync waiting for the thread pool is done", async () => {
    const inline = new InlineConnection(store.sqliteFile!);
    // Keep libuv's pool busy (4 threads), so the sync waits in its queue while close() is called.
    const busy = Array.from({ length: 4 }, () => new Promise((resolve) => crypto.pbkdf2("p", "s", 300_000, 32, "sha256", resolve)));
    inline.tryExecute(store.db.insertInto("workers").values(worker("w1")).compile());
    const synced = inline.synced();
    const closed = inline.close();
    // Before: the descriptor was closed under the queued sync (EBADF, or another file's once reused).
    await expect(synced).resolves.toBeUndefined();
    await closed;
    await Promise.all(busy);
  });

  it("never waits for the lock: held by another connection, the write is left to the caller", async () => {
    const other = new SQLite(store.sqliteFile!);
    const inline = new InlineConnection(store.sqliteFile!);
    try {
      other.exec("BEGIN IMMEDIATE");
      const started = Date.now();
      expect(inline.tryExecute(store.db.insertInto("workers").values(worker("w1")).compile())).toBeUndefined();
      expect(Date.now() - started).toBeLessThan(1000);
      other.exec("ROLLBACK");
    } finally {
      await inline.close();
      other.close();
    }
  });
});

describe("the writer's single statements", () => {
  let writer: SqliteWriter;
  beforeEach(() => {
    writer = new SqliteWriter(store.sqliteFile!);
  });
  afterEach(async () => {
    await writer.close();
  });

  it("a durable one answers after its log is synced; one that may be lost syncs nothing", async () => {
    const syncs = watchSyncs();
    const durable = new Kysely<Database>({ dialect: writerDialect(writer) });
    const lazy = new Kysely<Database>({ dialect: writerDialect(writer, { durable: false }) });
    await lazy.insertInto("workers").values(worker("w1")).execute();
    expect(syncs).toEqual([]);
    await durable.insertInto("workers").values(worker("w2")).execute();
    expect(syncs.length).toBe(1);
    expect(syncs[0]!.done).toBe(true);
    expect((await store.db.selectFrom("workers").select("id").orderBy("id").execute()).map((r) => r.id)).toEqual(["w1", "w2"]);
  });

  it("after a failed sync of the log, writes go to the thread (SQLite's own syncs), none to the server's thread", async () => {
    const real = fs.fdatasync;
    let calls = 0;
    vi.spyOn(fs, "fdatasync").mockImplementation(((fd: number, callback: (error: NodeJS.ErrnoException | null) => void) => {
      calls += 1;
      if (calls === 1) setImmediate(() => callback(Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" })));
      else real(fd, callback);
    }) as typeof fs.fdatasync);
    const writes = new Kysely<Database>({ dialect: writerDialect(writer) });
    await expect(writes.insertInto("workers").values(worker("w1")).execute()).rejects.toMatchObject({ code: "EIO" });
    await writes.insertInto("workers").values(worker("w2")).execute();
    await new Kysely<Database>({ dialect: writerDialect(writer, { durable: false }) }).insertInto("workers").values(worker("w3")).execute();
    expect(calls).toBe(1);
    expect((await store.db.selectFrom("workers").select("id").orderBy("id").execute()).map((r) => r.id)).toEqual(["w1", "w2", "w3"]);
  });

  it("a write that finds the lock held goes to the thread, which waits for the lock", async () => {
    const other = new SQLite(store.sqliteFile!);
    const writes = new Kysely<Database>({ dialect: writerDialect(writer) });
    try {
      other.exec("BEGIN IMMEDIATE");
      const inserted = writes.insertInto("workers").values(worker("w1")).execute();
      await new Promise((resolve) => setTimeout(resolve, 300));
      other.exec("COMMIT");
      await inserted;
    } finally {
      other.close();
    }
    expect(await store.db.selectFrom("workers").select("id").execute()).toEqual([{ id: "w1" }]);
  });
});
