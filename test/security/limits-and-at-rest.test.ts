/**
 * Issue 12: M2 (the process cap is a cap) and "secrets at rest, everywhere" for what the builder
 * stores: bundles sealed like secrets, build logs without the worker's secret values.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliEnv, fixtureDeps, workerIdOf, writeProject, type Deps } from "../build-run/fixtures.js";
import { ntn } from "../helpers/run-ntn.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { tempDir } from "../helpers/tmp.js";

const CANARY = `bundle-canary-${crypto.randomBytes(6).toString("hex")}`;
const SECRET = `load-secret-${crypto.randomBytes(6).toString("hex")}`;

const SOURCE = `import { Worker } from "@notionhq/workers";
import { j } from "@notionhq/workers/schema-builder";
// Printed while the module loads, which a deploy does to read the manifest.
console.log("loading with", process.env.LOAD_SECRET ?? "no secret yet");
const worker = new Worker();
export default worker;
worker.tool("hold", {
  title: ${JSON.stringify(CANARY)}, description: "waits", schema: j.object({ ms: j.number() }),
  execute: async ({ ms }) => { await new Promise((r) => setTimeout(r, ms)); return "held"; },
});
`;

/** Worker processes of this server's data dir alive now, as the host sees them (their bundle comes from its deployments folder). */
function processesOf(dataDir: string): number {
  let count = 0;
  for (const entry of fs.readdirSync("/proc").filter((e) => /^\d+$/.test(e))) {
    try {
      if (!fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").includes("/workyard/child.mjs")) continue;
      if (fs.readFileSync(`/proc/${entry}/mountinfo`, "utf8").includes(`${dataDir}/deployments/`)) count += 1;
    } catch {
      // gone meanwhile
    }
  }
  return count;
}

describe("limits that hold, and what the builder stores (M2, at rest)", () => {
  let server: TestServer;
  let tmp: { dir: string; cleanup(): void };
  let deps: Deps;
  const dirs: string[] = [];

  beforeAll(async () => {
    server = await startTestServer({ maxProcesses: 2 });
    tmp = tempDir("wy-limits-");
    deps = fixtureDeps();
    const env = cliEnv(server, path.join(tmp.dir, "home"));
    for (const name of ["one", "two", "three"]) {
      const dir = writeProject(path.join(tmp.dir, name), deps, SOURCE);
      const deployed = await ntn(["workers", "deploy", "--name", name], { cwd: dir, env, timeoutMs: 180_000 });
      expect(deployed.code, deployed.stderr).toBe(0);
      dirs.push(dir);
    }
  });
  afterAll(async () => {
    await server?.stop();
    tmp?.cleanup();
  });

  const run = (dir: string, ms: number) => server.call("RunCapability", { workerId: workerIdOf(dir), capabilityKey: "hold", args: { ms } });

  it("M2: with --max-processes 2, three workers' runs at once never have more than two processes; the third waits its turn", async () => {
    let most = 0;
    let polling = true;
    const poll = (async () => {
      while (polling) {
        most = Math.max(most, processesOf(server.dataDir));
        await new Promise((r) => setTimeout(r, 25));
      }
    })();
    const answers = await Promise.all(dirs.map((dir) => run(dir, 1500)));
    polling = false;
    await poll;
    expect(answers.map((a) => [a.status, a.body.result])).toEqual([
      [200, "held"],
      [200, "held"],
      [200, "held"],
    ]);
    expect(most).toBeGreaterThan(0);
    expect(most).toBeLessThanOrEqual(2);
  });

  it("M2: one workspace holds at most its share of the cap; past it a run waits, then answers 503 with Retry-After; another workspace still runs", async () => {
    const long = run(dirs[0]!, 13_000);
    await new Promise((r) => setTimeout(r, 500));
    // The default workspace holds its share (one of two): its next run waits, then gets a 503.
    const waited = await run(dirs[1]!, 10);
    expect(waited.status).toBe(503);
    expect(waited.body.code).toBe("overloaded");
    expect(waited.body.message).toMatch(/This workspace runs its share of 1 of the server's 2 worker processes/);
    // Another workspace is not starved by it (security review, finding 6).
    const other = await server.call("CreateWorkspace", { name: "other" });
    const env = cliEnv(server, path.join(tmp.dir, "home-other"), { NOTION_API_TOKEN: other.body.token, NOTION_WORKSPACE_ID: other.body.workspaceId });
    const theirs = writeProject(path.join(tmp.dir, "theirs"), deps, SOURCE);
    expect((await ntn(["workers", "deploy", "--name", "theirs"], { cwd: theirs, env, timeoutMs: 180_000 })).code).toBe(0);
    const answer = await server.call("RunCapability", { workerId: workerIdOf(theirs), capabilityKey: "hold", args: { ms: 10 } }, other.body.token);
    expect(answer.status, JSON.stringify(answer.body)).toBe(200);
    expect(processesOf(server.dataDir)).toBeLessThanOrEqual(2);
    expect((await long).status).toBe(200);
  });

  it("bundles are sealed at rest: the database holds no clear bundle and no line of the worker's code", async () => {
    const rows = await server.server.store.db.selectFrom("deployments").select(["bundle", "source_map", "bundle_key_id", "bundle_sealed"]).where("status", "=", "ready").execute();
    expect(rows.length).toBeGreaterThan(0);
    for (const row of rows) {
      expect(row.bundle).toBeNull();
      expect(row.source_map).toBeNull();
      expect(row.bundle_key_id).toBeTruthy();
      expect(Buffer.from(row.bundle_sealed!).includes(CANARY)).toBe(false);
    }
    for (const name of ["workyard.db", "workyard.db-wal"]) {
      const file = path.join(server.dataDir, name);
      if (fs.existsSync(file)) expect(fs.readFileSync(file).includes(CANARY), name).toBe(false);
    }
  });

  it("build logs show the worker's secret values as [secret], streamed and stored", async () => {
    const env = cliEnv(server, path.join(tmp.dir, "home"));
    expect((await ntn(["workers", "env", "set", `LOAD_SECRET=${SECRET}`], { cwd: dirs[0]!, env })).code).toBe(0);
    // A version that prints the secret and fails while loading: its output and error go in the log.
    fs.writeFileSync(path.join(dirs[0]!, "src", "index.ts"), `${SOURCE}\nthrow new Error(\`cannot start with \${process.env.LOAD_SECRET}\`);\n`);
    const deployed = await ntn(["workers", "deploy"], { cwd: dirs[0]!, env, timeoutMs: 120_000 });
    expect(deployed.code).toBe(5);
    expect(deployed.stderr).toContain("loading with [secret]");
    expect(deployed.stderr).toContain("cannot start with [secret]");
    expect(deployed.stderr).not.toContain(SECRET);
    const logs = await server.server.store.db.selectFrom("deployments").select("build_log").execute();
    expect(JSON.stringify(logs)).toContain("loading with [secret]");
    expect(JSON.stringify(logs)).not.toContain(SECRET);
  });
});
