/**
 * Issue 15, "a delivery runs on one process at a time": the claim of due deliveries, on each store
 * engine, with time as an input. A claim whose lease ran out (its process stalled longer than the
 * lease: a slow load, a paused VM) may be taken by another; from then on the stale claim can
 * neither renew nor finish the delivery, so the two attempts never both count. On PostgreSQL,
 * claimers at once take disjoint rows (FOR UPDATE SKIP LOCKED) and together take every due row.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openStore, type Store } from "../../packages/server/src/store/db.js";
import { migrateToLatest } from "../../packages/server/src/store/migrate.js";
import * as webhooksStore from "../../packages/server/src/store/webhooks.js";
import { DIALECTS } from "../helpers/dialects.js";
import { freshSchema } from "../helpers/pg.js";
import { tempDir } from "../helpers/tmp.js";

const T0 = 1_000_000;
const LEASE = 15_000;

describe.each(DIALECTS)("claiming webhook deliveries (%s)", (dialect) => {
  let store: Store;
  let cleanup: () => Promise<void>;

  beforeEach(async () => {
    if (dialect === "postgres") {
      const schema = await freshSchema();
      store = await openStore({ dataDir: "", databaseUrl: schema.url });
      cleanup = async () => {
        await store.close();
        await schema.drop();
      };
    } else {
      const dir = tempDir("wy-claims-");
      store = await openStore({ dataDir: dir.dir });
      cleanup = async () => {
        await store.close();
        dir.cleanup();
      };
    }
    await migrateToLatest(store.db, dialect);
    for (const ws of ["ws1", "ws2"]) {
      await store.db.insertInto("workspaces").values({ id: ws, name: ws, created_at: 1, sandbox_index: ws === "ws1" ? 1 : 2 }).execute();
      await store.db
        .insertInto("workers")
        .values({ id: `w-${ws}`, workspace_id: ws, name: "w", created_at: 1, updated_at: 1, live_deployment_id: null, secrets_version: 0 })
        .execute();
    }
  });
  afterEach(async () => cleanup());

  const deliver = (id: string, ws = "ws1", at = T0) =>
    webhooksStore.insertDelivery(store.db, { id, workspace_id: ws, worker_id: `w-${ws}`, webhook_key: "hook", request_key_id: "k", request_sealed: Buffer.from("sealed"), received_at: at });
  const claim = (token: string, now: number, limit = 10, exclude: string[] = []) =>
    webhooksStore.claimDue(store.db, dialect, token, now, now + LEASE, limit, exclude).then((rows) => rows.map((r) => r.id).sort());
  const finish = (id: string, token: string) =>
    webhooksStore.finishAttempt(store.db, id, token, { status: "succeeded", attempts: 1, spared_runs: 0, run_ids: JSON.stringify([`run-${token}`]), next_attempt_at: T0, finished_at: T0, last_error: null });

  it("a claimed delivery is not claimed again while its lease holds; a stale claim can neither renew nor finish it", async () => {
    await deliver("d1");
    expect(await claim("A", T0)).toEqual(["d1"]);
    expect(await claim("B", T0 + LEASE - 1)).toEqual([]);
    // A's process stalls past its lease: B takes the delivery over.
    expect(await claim("B", T0 + LEASE + 1)).toEqual(["d1"]);
    expect(await webhooksStore.renewLease(store.db, "d1", "A", T0 + 2 * LEASE)).toBe(false);
    expect(await finish("d1", "A")).toBe(false);
    expect(await webhooksStore.renewLease(store.db, "d1", "B", T0 + 2 * LEASE)).toBe(true);
    expect(await finish("d1", "B")).toBe(true);
    const row = await webhooksStore.findDelivery(store.db, "w-ws1", "d1");
    expect({ status: row?.status, runs: row?.run_ids, lease: row?.lease_owner }).toEqual({ status: "succeeded", runs: JSON.stringify(["run-B"]), lease: null });
    // Finished is finished: no claim takes it again.
    expect(await claim("C", T0 + 10 * LEASE)).toEqual([]);
  });

  it("a delivery's spared runs (stopped for another run's time limit) are kept with it, and a redelivery resets them with its attempts", async () => {
    await deliver("spared");
    expect(await claim("A", T0)).toEqual(["spared"]);
    const spare = { status: "queued" as const, attempts: 0, spared_runs: 2, run_ids: JSON.stringify(["r1", "r2"]), next_attempt_at: T0, finished_at: null, last_error: "stopped" };
    expect(await webhooksStore.finishAttempt(store.db, "spared", "A", spare)).toBe(true);
    expect((await webhooksStore.findDelivery(store.db, "w-ws1", "spared"))?.spared_runs).toBe(2);
    expect(await claim("B", T0 + 1)).toEqual(["spared"]);
    expect(await webhooksStore.finishAttempt(store.db, "spared", "B", { ...spare, status: "failed", attempts: 4, finished_at: T0 + 1 })).toBe(true);
    expect(await webhooksStore.requeueDelivery(store.db, "w-ws1", "spared", T0 + 2)).toBe(true);
    const row = await webhooksStore.findDelivery(store.db, "w-ws1", "spared");
    expect({ status: row?.status, attempts: row?.attempts, spared: row?.spared_runs }).toEqual({ status: "queued", attempts: 0, spared: 0 });
  });

  it("takes due deliveries only, oldest first, up to the limit, and never those its process still runs", async () => {
    await deliver("old", "ws1", T0 - 2);
    await deliver("mid", "ws1", T0 - 1);
    await deliver("later", "ws1", T0 + 5_000);
    expect(await claim("A", T0, 1)).toEqual(["old"]);
    // The process runs "old", whose lease ran out: it takes others, never "old" again.
    expect(await claim("A2", T0 + LEASE + 1, 10, ["old"])).toEqual(["later", "mid"]);
    expect(await claim("B", T0 + LEASE + 2)).toEqual(["old"]);
  });

  it("takes at most its limit, the oldest first, from queued deliveries and lapsed claims together", async () => {
    for (let i = 0; i < 6; i++) await deliver(`q${i}`, "ws1", T0 + i * 10);
    // Two lapsed claims, due from before and after some of the queued ones.
    await webhooksStore.insertDelivery(store.db, { id: "r-early", workspace_id: "ws1", worker_id: "w-ws1", webhook_key: "hook", request_key_id: "k", request_sealed: Buffer.from("s"), received_at: T0 - 5 }, { claim: "gone", leaseUntil: T0 });
    await webhooksStore.insertDelivery(store.db, { id: "r-late", workspace_id: "ws1", worker_id: "w-ws1", webhook_key: "hook", request_key_id: "k", request_sealed: Buffer.from("s"), received_at: T0 + 25 }, { claim: "gone", leaseUntil: T0 });
    const at = T0 + 1000;
    expect(await claim("A", at, 3)).toEqual(["q0", "q1", "r-early"]);
    expect(await claim("B", at, 3)).toEqual(["q2", "r-late", "q3"].sort());
    expect(await claim("C", at, 3)).toEqual(["q4", "q5"]);
    expect(await claim("D", at, 3)).toEqual([]);
  });

  it("a delivery stored already claimed (its process runs it at once) is taken by another only once its lease ran out", async () => {
    await webhooksStore.insertDelivery(store.db, { id: "d1", workspace_id: "ws1", worker_id: "w-ws1", webhook_key: "hook", request_key_id: "k", request_sealed: Buffer.from("s"), received_at: T0 }, { claim: "A", leaseUntil: T0 + LEASE });
    expect(await claim("B", T0 + LEASE - 1)).toEqual([]);
    expect(await claim("B", T0 + LEASE + 1)).toEqual(["d1"]);
    expect(await finish("d1", "A")).toBe(false);
    expect(await finish("d1", "B")).toBe(true);
  });

  it("counts what waits to run, per workspace and in all", async () => {
    await deliver("a", "ws1");
    await deliver("b", "ws1");
    await deliver("c", "ws2");
    await claim("A", T0, 1);
    await finish("a", "A");
    expect(await webhooksStore.countWaiting(store.db, "ws1")).toBe(1);
    expect(await webhooksStore.countWaiting(store.db, "ws2")).toBe(1);
    expect(await webhooksStore.countWaiting(store.db)).toBe(2);
  });

  it.runIf(dialect === "postgres")("claimers at once take disjoint deliveries and, together, every due one", async () => {
    const ids = Array.from({ length: 60 }, (_, i) => `d${String(i).padStart(2, "0")}`);
    for (const id of ids) await deliver(id);
    const taken = await Promise.all(Array.from({ length: 6 }, (_, i) => claim(`P${i}`, T0, 10)));
    const all = taken.flat();
    expect(new Set(all).size).toBe(all.length);
    expect(all.sort()).toEqual(ids);
  });
});
