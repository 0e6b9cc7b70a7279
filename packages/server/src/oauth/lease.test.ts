import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Kysely } from "kysely";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openStore, type Store } from "../store/db.js";
import { migrateToLatest } from "../store/migrate.js";
import * as oauthStore from "../store/oauth.js";
import type { Database, OauthConnectionRow } from "../store/schema.js";
import { leaseOrNewerRow, leaseTimingFor, tryLease } from "./lease.js";

// The lease's compare-and-set and fencing on a real (SQLite) store; time is an input.
let dir: string;
let store: Store;
let db: Kysely<Database>;
let clock: number;
const now = () => clock;
const target = { workerId: "w1", key: "githubAuth" };
const TTL = 30_000;

beforeEach(async () => {
  clock = 1_000_000;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "wy-lease-"));
  store = await openStore({ dataDir: dir });
  db = store.db;
  await migrateToLatest(db, "sqlite");
  await db.insertInto("workspaces").values({ id: "ws", name: "W", created_at: 1, sandbox_index: 1 }).execute();
  await db.insertInto("workers").values({ id: "w1", workspace_id: "ws", name: "w1", created_at: 1, updated_at: 1, live_deployment_id: null, secrets_version: 0 }).execute();
  await oauthStore.replaceConnection(db, {
    worker_id: "w1",
    capability_key: "githubAuth",
    workspace_id: "ws",
    status: "connected",
    key_id: "k",
    sealed: Buffer.from("sealed"),
    has_refresh_token: 1,
    access_expires_at: clock + 60_000,
    expiry_source: "provider",
    connected_at: clock,
    obtained_at: clock - 3_600_000,
    last_refresh_at: null,
    next_refresh_at: clock,
    last_error: null,
    last_error_at: null,
    last_error_kind: null,
    failure_count: 0,
    lease_owner: null,
    lease_expires_at: null,
    updated_at: clock,
  });
});

afterEach(async () => {
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const row = async () => (await oauthStore.findConnection(db, target.workerId, target.key))!;
/** What another refresher's fenced write does: a new token, version + 1, lease released. */
const writeAs = (owner: string, seen: OauthConnectionRow, fields: Partial<OauthConnectionRow> = {}) =>
  oauthStore.writeRefreshed(db, target.workerId, target.key, { owner, version: seen.version }, { obtained_at: clock, access_expires_at: clock + 3_600_000, ...fields });

describe("leaseTimingFor: the one definition of the lease's clocks", () => {
  it("lasts three provider timeouts and is waited for four (30 s and 40 s by default)", () => {
    expect(leaseTimingFor(10_000)).toEqual({ leaseTtlMs: 30_000, leaseWaitMs: 40_000 });
  });
});

describe("tryLease: compare-and-set", () => {
  it("one holder at a time; free again once released or run out", async () => {
    const first = await tryLease(db, target, now(), TTL);
    expect(first).toBeDefined();
    expect(await tryLease(db, target, now(), TTL)).toBeUndefined();
    await first!.release();
    const second = await tryLease(db, target, now(), TTL);
    expect(second).toBeDefined();
    clock += TTL + 1;
    const third = await tryLease(db, target, now(), TTL);
    expect(third).toBeDefined();
    expect(third!.owner).not.toBe(second!.owner);
    // A late release by the overtaken holder does not free the new holder's lease.
    await second!.release();
    expect((await row()).lease_owner).toBe(third!.owner);
  });

  it("fences writes: an overtaken holder's write is dropped, the current holder's lands", async () => {
    const seen = await row();
    const overtaken = (await tryLease(db, target, now(), TTL))!;
    clock += TTL + 1;
    const current = (await tryLease(db, target, now(), TTL))!;
    expect(await writeAs(overtaken.owner, seen)).toBe(false);
    expect(await writeAs(current.owner, seen)).toBe(true);
    expect(await row()).toMatchObject({ version: seen.version + 1, lease_owner: null });
  });
});

describe("leaseOrNewerRow", () => {
  const fresh = (r: OauthConnectionRow) => r.access_expires_at !== null && r.access_expires_at - clock > 300_000;
  const timing = { leaseTtlMs: TTL, leaseWaitMs: 40_000 };

  it("takes a free lease and answers the row as it is under it", async () => {
    const seen = await row();
    const taken = await leaseOrNewerRow(db, target, { seen, timing, now, goodEnough: fresh });
    expect(taken.lease).toBeDefined();
    expect(taken.row.lease_owner).toBe(taken.lease!.owner);
  });

  it("waits for the holder and takes its newer token instead of refreshing again", async () => {
    const seen = await row();
    const holder = (await tryLease(db, target, now(), TTL))!;
    const waiting = leaseOrNewerRow(db, target, { seen, timing, now, goodEnough: fresh });
    await writeAs(holder.owner, seen);
    const taken = await waiting;
    expect(taken.lease).toBeUndefined();
    expect(taken.row.version).toBe(seen.version + 1);
  });

  it("double-checks under the lease: a write between the caller's read and the lease is used", async () => {
    const seen = await row();
    const other = (await tryLease(db, target, now(), TTL))!;
    await writeAs(other.owner, seen);
    const taken = await leaseOrNewerRow(db, target, { seen, timing, now, goodEnough: fresh });
    expect(taken.lease).toBeUndefined();
    expect((await row()).lease_owner).toBeNull();
  });

  it("takes over a lease whose holder ran out (crashed)", async () => {
    const seen = await row();
    await tryLease(db, target, now(), TTL);
    clock += TTL + 1;
    const taken = await leaseOrNewerRow(db, target, { seen, timing, now, goodEnough: fresh });
    expect(taken.lease).toBeDefined();
  });

  it("after the wait: a still valid token, else oauth_refresh_busy", async () => {
    const seen = await row();
    await tryLease(db, target, now(), 10 * 60_000);
    const short = { leaseTtlMs: 10 * 60_000, leaseWaitMs: 1 };
    // A clock that moves a millisecond per look, so the 1 ms wait ends at the first check.
    const ticking = () => ++clock;
    const waited = await leaseOrNewerRow(db, target, { seen, timing: short, now: ticking, goodEnough: fresh });
    expect(waited.lease).toBeUndefined();
    expect(waited.row.version).toBe(seen.version);
    clock += 60_000;
    await expect(leaseOrNewerRow(db, target, { seen, timing: short, now: ticking, goodEnough: fresh })).rejects.toMatchObject({ code: "oauth_refresh_busy" });
  });

  it("a connection deleted or marked for re-authorization meanwhile answers the connectedRow error", async () => {
    const seen = await row();
    await oauthStore.writeRefreshed(db, target.workerId, target.key, { owner: "nobody", version: seen.version }, {});
    await db.updateTable("oauth_connections").set({ status: "needs_reauthorization", last_error: "invalid_grant" }).execute();
    await expect(leaseOrNewerRow(db, target, { seen, timing, now, goodEnough: fresh })).rejects.toMatchObject({ code: "oauth_needs_reauthorization" });
    await oauthStore.deleteConnection(db, target.workerId, target.key);
    await expect(leaseOrNewerRow(db, target, { seen, timing, now, goodEnough: fresh })).rejects.toMatchObject({ code: "oauth_not_connected" });
  });
});
