import { afterEach, beforeEach, describe, expect, it } from "vitest";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Kysely } from "kysely";
import { openStore, type Store } from "./db.js";
import { migrateToLatest } from "./migrate.js";
import { prepared } from "./prepared.js";
import { runFinish, runInsert } from "./runs.js";
import type { Database, RunRow } from "./schema.js";

let dir: string;
let store: Store;
let db: Kysely<Database>;

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "wy-prepared-"));
  store = await openStore({ dataDir: dir });
  db = store.db;
  await migrateToLatest(db, "sqlite");
  await db.insertInto("workspaces").values({ id: "ws", name: "W", created_at: 1, sandbox_index: 1 }).execute();
  for (const id of ["w1", "w2"]) {
    await db.insertInto("workers").values({ id, workspace_id: "ws", name: id, created_at: 1, updated_at: 1, live_deployment_id: null, secrets_version: 0 }).execute();
  }
});

afterEach(async () => {
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const run = (id: string, workerId: string): RunRow => ({
  id,
  workspace_id: "ws",
  worker_id: workerId,
  deployment_id: "d1",
  capability_key: "hello",
  status: "running",
  exit_code: null,
  started_at: 10,
  ended_at: null,
  duration_ms: null,
  error: null,
  logs: null,
  delivery_id: null,
});

describe("prepared statements take named parameters", () => {
  it("binds each name where the query uses it, whatever the order the caller gives them in", async () => {
    const byWorkerAndName = prepared((db: Kysely<Database>, p: { workerId: string; name: string }) =>
      db.selectFrom("workers").select("id").where("name", "=", p.name).where("workspace_id", "=", "ws").where("id", "=", p.workerId),
    );
    expect(await byWorkerAndName(db, { name: "w1", workerId: "w1" })).toEqual([{ id: "w1" }]);
    // Compiled once, then each call's values: another worker, and a mismatch that finds nothing.
    expect(await byWorkerAndName(db, { workerId: "w2", name: "w2" })).toEqual([{ id: "w2" }]);
    expect(await byWorkerAndName(db, { workerId: "w1", name: "w2" })).toEqual([]);
    // Constants stay where the query put them.
    expect(byWorkerAndName.compile(db, { workerId: "w2", name: "x" }).parameters).toEqual(["x", "ws", "w2"]);
  });

  it("binds a name used twice in both places", async () => {
    const either = prepared((db: Kysely<Database>, p: { id: string }) =>
      db.selectFrom("workers").select("id").where((eb) => eb.or([eb("id", "=", p.id), eb("name", "=", p.id)])),
    );
    expect(either.compile(db, { id: "w1" }).parameters).toEqual(["w1", "w1"]);
    expect(await either(db, { id: "w2" })).toEqual([{ id: "w2" }]);
  });

  it("refuses a parameter read but not bound", () => {
    const branching = prepared((db: Kysely<Database>, p: { id: string; all: boolean }) => {
      const query = db.selectFrom("workers").select("id");
      return p.all ? query : query.where("id", "=", p.id);
    });
    expect(() => branching.compile(db, { id: "w1", all: false })).toThrow(/reads all without binding it/);
  });

  it("writes a run's insert and final update from the row itself", async () => {
    await db.executeQuery(runInsert.compile(db, run("r1", "w1")));
    await db.executeQuery(runFinish.compile(db, { id: "r1", status: "succeeded", exit_code: 0, ended_at: 15, duration_ms: 5, error: null, logs: "hi\n" }));
    expect(await db.selectFrom("runs").selectAll().execute()).toEqual([
      { ...run("r1", "w1"), status: "succeeded", exit_code: 0, ended_at: 15, duration_ms: 5, logs: "hi\n" },
    ]);
  });
});
