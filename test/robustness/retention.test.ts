/**
 * Retention (security review M3: nothing was ever cleaned). Time is moved by writing old
 * timestamps into rows and old mtimes onto folders, then one sweep runs and the test looks at what
 * remains: runs past the retention, deployments beyond the kept ones (never the live one, never one
 * building), uploads nothing needs, installed trees nothing uses, crash-left incoming uploads.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { Kysely } from "kysely";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Maintenance, type SweepReport } from "../../packages/server/src/maintenance.js";
import type { Database, DeploymentsTable } from "../../packages/server/src/store/schema.js";
import { setLiveDeployment } from "../../packages/server/src/store/workers.js";
import { cliEnv, fixtureDeps, writeProject } from "../build-run/fixtures.js";
import { DIALECTS } from "../helpers/dialects.js";
import { ntn as runCli } from "../helpers/run-ntn.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { tempDir } from "../helpers/tmp.js";

const MINUTE = 60 * 1000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** A sweep of the test server's store and data dir, as the server's own maintenance runs it. */
function sweep(server: TestServer, options: { deploymentsKept?: number; runRetentionMs?: number; webhookRetentionMs?: number } = {}): Promise<SweepReport> {
  const { config, store, log } = server.server;
  const maintenance = new Maintenance({
    db: store.db,
    dataDir: config.dataDir,
    runTimeoutMs: config.runTimeoutMs,
    soleServer: false,
    runRetentionMs: options.runRetentionMs ?? config.runRetentionMs,
    deploymentsKept: options.deploymentsKept ?? config.deploymentsKept,
    webhookRetentionMs: options.webhookRetentionMs ?? config.webhookRetentionMs,
    workerProcesses: { workerIds: () => [], retireWorker: () => {} },
    log,
  });
  return maintenance.sweep(false);
}

async function createWorker(server: TestServer, name: string): Promise<string> {
  const created = await server.call("CreateWorker", { name });
  expect(created.status, JSON.stringify(created.body)).toBe(200);
  return created.body.worker.workerId as string;
}

/** A received upload (built at `builtAt`, or never), as a build leaves it. */
async function addUpload(db: Kysely<Database>, server: TestServer, workerId: string, fields: { at: number; builtAt: number | null; received?: boolean }): Promise<string> {
  const id = crypto.randomUUID();
  await db
    .insertInto("uploads")
    .values({
      id,
      workspace_id: server.workspaceId,
      worker_id: workerId,
      created_at: fields.at,
      expires_at: fields.at + 15 * MINUTE,
      received_at: fields.received === false ? null : fields.at,
      archive: fields.received === false ? null : Buffer.from("archive"),
      archive_key_id: null,
      archive_size: fields.received === false ? null : 7,
      built_at: fields.builtAt,
    })
    .execute();
  return id;
}

/** A deployment with its upload, created at `at`. */
async function addDeployment(
  db: Kysely<Database>,
  server: TestServer,
  workerId: string,
  at: number,
  status: DeploymentsTable["status"] = "ready",
  lockfileHash: string | null = null,
): Promise<{ id: string; uploadId: string }> {
  const uploadId = await addUpload(db, server, workerId, { at, builtAt: at });
  const id = crypto.randomUUID();
  await db
    .insertInto("deployments")
    .values({
      id,
      workspace_id: server.workspaceId,
      worker_id: workerId,
      upload_id: uploadId,
      created_at: at,
      finished_at: status === "building" ? null : at + MINUTE,
      status,
      lockfile_hash: lockfileHash,
      bundle: null,
      source_map: null,
      bundle_key_id: null,
      bundle_sealed: null,
      capabilities: null,
      manifest_key_id: null,
      manifest_sealed: null,
      manifest_secrets_version: null,
      build_log: null,
      error: status === "failed" ? "failed on purpose" : null,
    })
    .execute();
  return { id, uploadId };
}

async function idsOf(db: Kysely<Database>, table: "runs" | "deployments" | "uploads", workerId: string): Promise<string[]> {
  const rows = await db.selectFrom(table).select("id").where("worker_id", "=", workerId).execute();
  return rows.map((r) => r.id).sort();
}

/** A folder (and what is in it) last changed `ageMs` ago. */
function makeOld(dir: string, ageMs: number): void {
  const at = new Date(Date.now() - ageMs);
  fs.utimesSync(dir, at, at);
}

describe.each(DIALECTS)("retention on %s", (dialect) => {
  let server: TestServer;
  afterEach(async () => {
    await server?.stop();
  });

  it("deletes runs (and their logs) that ended longer ago than the retention, never a running one", async () => {
    server = await startTestServer({ dialect });
    const { db } = server.server.store;
    const workerId = await createWorker(server, "runs-retention");
    const now = Date.now();
    const retention = server.server.config.runRetentionMs;
    expect(retention).toBe(30 * DAY);
    const insert = async (id: string, startedAt: number, endedAt: number | null) =>
      db
        .insertInto("runs")
        .values({
          id,
          workspace_id: server.workspaceId,
          worker_id: workerId,
          deployment_id: crypto.randomUUID(),
          capability_key: "tool",
          status: endedAt === null ? "running" : "succeeded",
          exit_code: endedAt === null ? null : 0,
          started_at: startedAt,
          ended_at: endedAt,
          duration_ms: endedAt === null ? null : endedAt - startedAt,
          error: null,
          logs: `logs of ${id}\n`,
        })
        .execute();
    await insert("old-ended", now - 40 * DAY, now - 40 * DAY + 1000);
    await insert("just-past", now - 31 * DAY, now - retention - MINUTE);
    await insert("long-run", now - 31 * DAY, now - 29 * DAY);
    await insert("recent", now - DAY, now - DAY + 1000);
    await insert("still-running", now - 40 * DAY, null);

    const report = await sweep(server);
    expect(report.runs).toBe(2);
    expect(await idsOf(db, "runs", workerId)).toEqual(["long-run", "recent", "still-running"]);
    // The running one was only recorded as interrupted (a run never lasts 40 days): not deleted.
    const interrupted = await db.selectFrom("runs").select(["status", "ended_at"]).where("id", "=", "still-running").executeTakeFirstOrThrow();
    expect(interrupted.status).toBe("failed");
    expect(Number(interrupted.ended_at)).toBeGreaterThanOrEqual(now);

    const logs = await server.call("GetRunLogs", { workerId, runId: "old-ended" });
    expect(logs.status).toBe(404);
    expect(logs.body.code).toBe("run_not_found");
  });

  it("keeps the live deployment, any building one and the newest N others; deletes the rest with their folders and uploads", async () => {
    server = await startTestServer({ dialect });
    const { db } = server.server.store;
    const root = path.join(server.dataDir, "deployments");
    const workerId = await createWorker(server, "deploy-retention");
    const now = Date.now();
    // Six ready deployments a day apart; the oldest is live, to show "live" wins over "newest".
    const ready = [];
    for (let i = 6; i >= 1; i -= 1) ready.push(await addDeployment(db, server, workerId, now - i * DAY));
    const failed = await addDeployment(db, server, workerId, now - 12 * HOUR, "failed");
    const building = await addDeployment(db, server, workerId, now - MINUTE, "building");
    const live = ready[0]!;
    await setLiveDeployment(db, workerId, live.id, now - 6 * DAY);
    for (const d of [...ready, failed, building]) {
      fs.mkdirSync(path.join(root, d.id), { recursive: true });
      fs.writeFileSync(path.join(root, d.id, "index.mjs"), "export default {};\n");
    }
    // A folder whose row is gone (its worker was deleted by another server process, say).
    const orphan = path.join(root, crypto.randomUUID());
    fs.mkdirSync(orphan);
    makeOld(orphan, 2 * HOUR);
    // A worker whose live deployment went live seconds ago: a run on the previous one may still
    // be going, so nothing of it goes yet.
    const fresh = await createWorker(server, "just-deployed");
    const freshDeployments = [];
    for (let i = 4; i >= 1; i -= 1) freshDeployments.push(await addDeployment(db, server, fresh, now - i * HOUR));
    const freshLive = await addDeployment(db, server, fresh, now - 30_000);
    await db.updateTable("deployments").set({ finished_at: now - 10_000 }).where("id", "=", freshLive.id).execute();
    await setLiveDeployment(db, fresh, freshLive.id, now - 10_000);

    const report = await sweep(server, { deploymentsKept: 2 });

    // Newest two besides the live and the building one: the failed one (12 h) and ready[5] (1 day).
    const kept = [live, building, failed, ready[5]!];
    const gone = [ready[1]!, ready[2]!, ready[3]!, ready[4]!];
    expect(report.deployments).toBe(gone.length);
    expect(await idsOf(db, "deployments", workerId)).toEqual(kept.map((d) => d.id).sort());
    for (const d of kept) expect(fs.existsSync(path.join(root, d.id, "index.mjs")), d.id).toBe(true);
    for (const d of gone) expect(fs.existsSync(path.join(root, d.id)), d.id).toBe(false);
    expect(fs.existsSync(orphan)).toBe(false);
    // The archives of kept deployments stay (other machines install from them); the rest go.
    const received = await db.selectFrom("uploads").select("id").where("worker_id", "=", workerId).where("received_at", "is not", null).execute();
    expect(received.map((u) => u.id).sort()).toEqual(kept.map((d) => d.uploadId).sort());
    expect(await idsOf(db, "deployments", fresh)).toHaveLength(5);

    // Nothing more goes at the next sweep; the live one still answers.
    expect(await sweep(server, { deploymentsKept: 2 })).toMatchObject({ deployments: 0, uploads: 0 });
    const worker = await db.selectFrom("workers").select("live_deployment_id").where("id", "=", workerId).executeTakeFirstOrThrow();
    expect(worker.live_deployment_id).toBe(live.id);

    // Once the new live deployment is older than the run time limit, the other worker is pruned too.
    await db.updateTable("deployments").set({ finished_at: now - HOUR }).where("id", "=", freshLive.id).execute();
    expect(await sweep(server, { deploymentsKept: 2 })).toMatchObject({ deployments: 2 });
    expect(await idsOf(db, "deployments", fresh)).toEqual([freshLive.id, freshDeployments[2]!.id, freshDeployments[3]!.id].sort());
  });

  it("deletes uploads no deployment needs once their build is done, and superseded ones never built", async () => {
    server = await startTestServer({ dialect });
    const { db } = server.server.store;
    const workerId = await createWorker(server, "upload-retention");
    const now = Date.now();
    const expiredUnused = await addUpload(db, server, workerId, { at: now - HOUR, builtAt: null, received: false });
    const spent = await addUpload(db, server, workerId, { at: now - 2 * HOUR, builtAt: now - HOUR });
    // Claimed a moment ago: its build may not have recorded its deployment yet.
    const justClaimed = await addUpload(db, server, workerId, { at: now - 30 * MINUTE, builtAt: now - 1000 });
    // Never built, and a newer upload arrived since: BuildWorker would never take it.
    const superseded = await addUpload(db, server, workerId, { at: now - 3 * HOUR, builtAt: null });
    // Never built, expired, but the newest that arrived: the next BuildWorker builds it.
    const newestUnbuilt = await addUpload(db, server, workerId, { at: now - 20 * MINUTE, builtAt: null });
    const pending = await addUpload(db, server, workerId, { at: now - MINUTE, builtAt: null, received: false });
    // The worker's CreateWorker issued one too (unused, not expired): it stays.
    const issued = await idsOf(db, "uploads", workerId).then((ids) => ids.filter((id) => ![expiredUnused, spent, justClaimed, superseded, newestUnbuilt, pending].includes(id)));
    expect(issued).toHaveLength(1);

    const report = await sweep(server);
    expect(report.uploads).toBe(3);
    expect(await idsOf(db, "uploads", workerId)).toEqual([justClaimed, newestUnbuilt, pending, ...issued].sort());
  });
});

describe("installed trees and incoming uploads of a deployed worker", () => {
  let server: TestServer;
  let tmp: { dir: string; cleanup(): void };
  let project: string;
  let env: Record<string, string | undefined>;

  const SOURCE = `import { Worker } from "@notionhq/workers";
import { j } from "@notionhq/workers/schema-builder";

const worker = new Worker();
export default worker;

worker.tool("hello", {
  title: "Hello",
  description: "Says hello",
  schema: j.object({}),
  execute: async () => ({ hello: "world" }),
});
`;

  /** Our CLI in the project folder. */
  const ntn = (argv: string[]) => runCli(argv, { cwd: project, env });

  beforeAll(async () => {
    // Trees this server installed and collects: no fixture tree in place.
    server = await startTestServer({ installedFixture: false });
    tmp = tempDir("wy-retention-");
    const deps = fixtureDeps();
    project = writeProject(path.join(tmp.dir, "hello"), deps, SOURCE);
    env = cliEnv(server, path.join(tmp.dir, "home"));
  });
  afterAll(async () => {
    await server?.stop();
    tmp?.cleanup();
  });

  it("keeps the trees deployments use, removes one nothing uses once an hour old, and the live worker still runs", async () => {
    for (const argv of [["workers", "deploy", "--name", "hello"], ["workers", "deploy"], ["workers", "deploy"]]) {
      const deployed = await ntn(argv);
      expect(deployed.code, deployed.stderr + server.logs()).toBe(0);
    }
    const { db } = server.server.store;
    const dirs = { deps: path.join(server.dataDir, "deps"), deployments: path.join(server.dataDir, "deployments"), incoming: path.join(server.dataDir, "uploads-incoming") };
    const workerId = (JSON.parse(fs.readFileSync(path.join(project, "workers.json"), "utf8")) as { workerId: string }).workerId;
    const deployments = await db.selectFrom("deployments").selectAll().where("worker_id", "=", workerId).orderBy("created_at").execute();
    expect(deployments.map((d) => d.status)).toEqual(["ready", "ready", "ready"]);
    const [first, second, live] = deployments as [(typeof deployments)[0], (typeof deployments)[0], (typeof deployments)[0]];
    const worker = await db.selectFrom("workers").select("live_deployment_id").where("id", "=", workerId).executeTakeFirstOrThrow();
    expect(worker.live_deployment_id).toBe(live.id);
    const tree = live.lockfile_hash!;
    expect(deployments.every((d) => d.lockfile_hash === tree)).toBe(true);
    for (const d of deployments) expect(fs.existsSync(path.join(dirs.deployments, d.id, "index.mjs"))).toBe(true);

    // An hour and more later: the live deployment settled, its builds long done, its tree untouched.
    const past = Date.now() - 2 * HOUR;
    await db.updateTable("deployments").set({ finished_at: past }).where("worker_id", "=", workerId).execute();
    await db.updateTable("uploads").set({ built_at: past }).where("worker_id", "=", workerId).where("built_at", "is not", null).execute();
    makeOld(path.join(dirs.deps, tree), 2 * HOUR);
    // A tree nothing uses, old: goes. One nothing uses, just installed: stays (its deployment may
    // not be recorded yet). One that only a materialised folder links to (this machine installed
    // the lockfile under another hash, on another Node major): stays.
    const unused = path.join(dirs.deps, "a".repeat(32));
    const justInstalled = path.join(dirs.deps, "b".repeat(32));
    const linkedOnly = path.join(dirs.deps, "c".repeat(32));
    for (const dir of [unused, justInstalled, linkedOnly]) {
      fs.mkdirSync(path.join(dir, "node_modules"), { recursive: true });
      fs.writeFileSync(path.join(dir, ".complete"), "");
    }
    makeOld(unused, 2 * HOUR);
    makeOld(linkedOnly, 2 * HOUR);
    const secondLink = path.join(dirs.deployments, second.id, "node_modules");
    fs.unlinkSync(secondLink);
    fs.symlinkSync(fs.realpathSync(path.join(linkedOnly, "node_modules")), secondLink);
    // Streamed uploads a killed process left: the old one goes, the one arriving now stays.
    fs.mkdirSync(dirs.incoming, { recursive: true });
    const crashLeft = path.join(dirs.incoming, "crash-left.part");
    const arriving = path.join(dirs.incoming, "arriving.part");
    fs.writeFileSync(crashLeft, "half an archive");
    fs.writeFileSync(arriving, "half an archive");
    makeOld(crashLeft, 2 * HOUR);

    // While a build is under way, no tree goes: it may be reusing one it has not recorded yet.
    const buildingId = crypto.randomUUID();
    await db
      .insertInto("deployments")
      .values({ ...live, id: buildingId, created_at: Date.now(), finished_at: null, status: "building", lockfile_hash: null })
      .execute();
    const during = await sweep(server, { deploymentsKept: 1 });
    expect(during.trees).toBe(0);
    expect(fs.existsSync(unused)).toBe(true);
    await db.deleteFrom("deployments").where("id", "=", buildingId).execute();

    const report = await sweep(server, { deploymentsKept: 1 });
    expect(report.trees).toBe(1);
    expect(fs.existsSync(unused)).toBe(false);
    expect(fs.existsSync(path.join(dirs.deps, tree, ".complete"))).toBe(true);
    expect(fs.existsSync(justInstalled)).toBe(true);
    expect(fs.existsSync(linkedOnly)).toBe(true);
    expect(fs.readdirSync(dirs.deps).filter((name) => name.includes(".tmp-"))).toEqual([]);
    expect(fs.existsSync(crashLeft)).toBe(false);
    expect(fs.existsSync(arriving)).toBe(true);

    // deploymentsKept 1 (the first sweep already applied it): the first deployment went, with its
    // folder and its upload; the second (kept) and the live one stay with their archives.
    expect(await idsOf(db, "deployments", workerId)).toEqual([second.id, live.id].sort());
    expect(fs.existsSync(path.join(dirs.deployments, first.id))).toBe(false);
    const uploads = await db.selectFrom("uploads").select("id").where("worker_id", "=", workerId).where("received_at", "is not", null).execute();
    expect(uploads.map((u) => u.id).sort()).toEqual([second.upload_id, live.upload_id].sort());

    // The live worker still runs from its tree.
    const result = await ntn(["workers", "exec", "hello", "-d", "{}"]);
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual({ hello: "world" });
  });
});
