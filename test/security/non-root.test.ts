/**
 * Issue 12 as a non-root user: `ntn server` started as nobody (the test itself runs as root, as CI
 * does). Workers then get user namespaces instead of uids of their own; the attacks of
 * worker-attacks.test.ts and build-attacks.test.ts that matter there fail the same way. Also:
 * what the server says, and `--isolation strict`, when bubblewrap is missing.
 */
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliEnv, liveDeploymentId, fixtureDeps, writeProject, type Deps } from "../build-run/fixtures.js";
import { OUR_NTN } from "../helpers/paths.js";
import { ntn } from "../helpers/run-ntn.js";
import { callAction, startServerProcess, type ServerProcess } from "../helpers/server-process.js";
import { tempDir } from "../helpers/tmp.js";
import { sh } from "../build-run/fixtures.js";

const isRoot = process.getuid?.() === 0;
const NOBODY = { uid: 65534, gid: 65534 };

const TOOLS = `import { Worker } from "@notionhq/workers";
import { j } from "@notionhq/workers/schema-builder";
import fs from "node:fs";
import os from "node:os";
const worker = new Worker();
export default worker;
const attempt = async (fn: () => unknown) => {
  try { return { ok: true, value: await fn() }; }
  catch (error) { const e = error as Error & { code?: string; cause?: Error & { code?: string } }; return { ok: false, code: e.code ?? e.cause?.code ?? null, message: e.cause?.message ?? e.message }; }
};
worker.tool("probe", { title: "probe", description: "who", schema: j.object({}), execute: async () => ({ uid: process.getuid!(), pid: process.pid, hostname: os.hostname() }) });
worker.tool("hold", { title: "hold", description: "waits", schema: j.object({ ms: j.number() }), execute: async ({ ms }) => { await new Promise((r) => setTimeout(r, ms)); return "held"; } });
worker.tool("kill", { title: "kill", description: "signals", schema: j.object({ pid: j.number() }), execute: async ({ pid }) => attempt(() => { process.kill(pid, "SIGKILL"); return "killed"; }) });
worker.tool("read", { title: "read", description: "reads", schema: j.object({ path: j.string() }), execute: async ({ path }) => attempt(() => fs.readFileSync(path, "utf8")) });
worker.tool("fetch", { title: "fetch", description: "fetches", schema: j.object({ url: j.string() }), execute: async ({ url }) => attempt(async () => { const r = await fetch(url); return { status: r.status, body: await r.text() }; }) });
`;

describe.skipIf(!isRoot)("`ntn server` as a non-root user: user and PID namespaces keep workers apart", () => {
  let server: ServerProcess;
  let tmp: { dir: string; cleanup(): void };
  let deps: Deps;
  let upstream: http.Server;
  let upstreamPort: number;
  let adminToken: string;
  let envA: Record<string, string | undefined>;
  let envB: Record<string, string | undefined>;
  let dirA: string;
  let dirB: string;
  const deploymentOf: Record<string, string> = {};

  const exec = async (dir: string, env: Record<string, string | undefined>, key: string, input: unknown = {}) => {
    const result = await ntn(["workers", "exec", key, "-d", JSON.stringify(input)], { cwd: dir, env });
    expect(result.code, result.stderr).toBe(0);
    return JSON.parse(result.stdout) as any;
  };

  beforeAll(async () => {
    upstream = http.createServer((_req, res) => res.writeHead(200).end("upstream"));
    await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
    upstreamPort = (upstream.address() as AddressInfo).port;
    tmp = tempDir("wy-nonroot-");
    fs.chmodSync(tmp.dir, 0o755);
    const dataDir = path.join(tmp.dir, "data");
    fs.mkdirSync(dataDir);
    server = await startServerProcess({ dataDir, user: NOBODY, args: ["--egress-allow", `127.0.0.1:${upstreamPort}`] });
    adminToken = fs.readFileSync(path.join(dataDir, "admin-token"), "utf8").trim();
    const created = await callAction(server.url, "CreateWorkspace", { name: "B" }, adminToken);
    expect(created.status).toBe(200);
    const me = await callAction(server.url, "WhoAmI", {}, adminToken);
    const base = { url: server.url, adminToken, workspaceId: me.body.workspaceId } as never;
    envA = cliEnv(base, path.join(tmp.dir, "home-a"));
    envB = cliEnv(base, path.join(tmp.dir, "home-b"), { NOTION_API_TOKEN: created.body.token, NOTION_WORKSPACE_ID: created.body.workspaceId });
    deps = fixtureDeps();
    dirA = writeProject(path.join(tmp.dir, "a"), deps, TOOLS);
    dirB = writeProject(path.join(tmp.dir, "b"), deps, TOOLS);
    for (const [dir, env, name] of [
      [dirA, envA, "a"],
      [dirB, envB, "b"],
    ] as const) {
      const deployed = await ntn(["workers", "deploy", "--name", name], { cwd: dir, env, timeoutMs: 180_000 });
      expect(deployed.code, deployed.stderr).toBe(0);
      deploymentOf[name] = liveDeploymentId(deployed.stderr);
    }
  });
  afterAll(async () => {
    await server?.kill();
    await new Promise((resolve) => upstream?.close(resolve));
    tmp?.cleanup();
  });

  it("says at start that workers run in user namespaces, with the egress policy", () => {
    expect(server.output()).toMatch(/^Isolation: workers and builds run in their own namespaces \(bubblewrap\) in user namespaces;/m);
    expect(server.output()).toMatch(/^Egress: /m);
    expect(server.output()).not.toMatch(/NOT isolated/);
  });

  it("a worker is the first process of its own PID namespace, as the server's user mapped into its own user namespace", async () => {
    const probe = await exec(dirB, envB, "probe");
    expect(probe).toEqual({ uid: NOBODY.uid, pid: 1, hostname: "workyard" });
  });

  it("B's worker cannot signal A's running worker", async () => {
    const running = ntn(["workers", "exec", "hold", "-d", '{"ms":3000}'], { cwd: dirA, env: envA });
    let victimPid: number | undefined;
    for (let i = 0; i < 100 && victimPid === undefined; i++) {
      for (const entry of fs.readdirSync("/proc").filter((e) => /^\d+$/.test(e))) {
        try {
          const cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, "utf8");
          // A's worker process: its bundle comes from A's deployment (both run as the same user).
          const mounts = fs.readFileSync(`/proc/${entry}/mountinfo`, "utf8");
          if (cmdline.includes("/workyard/child.mjs") && mounts.includes(`/deployments/${deploymentOf.a}/index.mjs /worker/index.mjs `)) {
            victimPid ??= Number(entry);
          }
        } catch {
          // gone
        }
      }
      if (victimPid === undefined) await new Promise((r) => setTimeout(r, 50));
    }
    expect(victimPid).toBeDefined();
    const killed = await exec(dirB, envB, "kill", { pid: victimPid });
    expect(killed).toMatchObject({ ok: false, code: "ESRCH" });
    const done = await running;
    expect(done.stdout).toBe('"held"\n');
  });

  it("cannot read the data dir, and reaches loopback only where --egress-allow says", async () => {
    for (const file of [path.join(server.dataDir, "master.key"), path.join(server.dataDir, "admin-token"), path.join(server.dataDir, "workyard.db")]) {
      expect((await exec(dirB, envB, "read", { path: file })).ok, file).toBe(false);
    }
    const denied = await exec(dirB, envB, "fetch", { url: `${server.url}/healthz` });
    expect(denied.message).toMatch(/^egress denied: .* is a loopback address; allow it with --egress-allow$/);
    expect(await exec(dirB, envB, "fetch", { url: `http://127.0.0.1:${upstreamPort}/` })).toEqual({ ok: true, value: { status: 200, body: "upstream" } });
  });

  it("a build cannot import the server's master key", async () => {
    const dir = writeProject(path.join(tmp.dir, "steal"), deps, `import key from ${JSON.stringify(path.join(server.dataDir, "master.key"))} with { type: "text" };\n${TOOLS}\nconsole.log(key);\n`);
    const result = await ntn(["workers", "deploy", "--name", "steal"], { cwd: dir, env: envB, timeoutMs: 120_000 });
    expect(result.code).toBe(5);
    expect(result.stderr).toMatch(/Bundling src\/index\.ts failed/);
    expect(result.stderr).not.toContain(fs.readFileSync(path.join(server.dataDir, "master.key"), "utf8").trim());
  });
});

describe("without bubblewrap", () => {
  it("`ntn server` says so in one loud line, and --isolation strict refuses to start", async () => {
    const tmp = tempDir("wy-nobwrap-");
    try {
      const env = { PATH: process.env.PATH ?? "/usr/bin", HOME: tmp.dir, XDG_CONFIG_HOME: path.join(tmp.dir, "config"), WORKYARD_BWRAP: "/nonexistent/bwrap" };
      const strict = await sh(process.execPath, [OUR_NTN, "server", "--port", "0", "--data-dir", path.join(tmp.dir, "strict"), "--isolation", "strict"], { cwd: tmp.dir, env });
      expect(strict.code).toBe(5);
      expect(strict.stderr).toMatch(/^error: --isolation strict: refusing to start: .*WORKYARD_BWRAP=\/nonexistent\/bwrap is not an executable.*apt-get install bubblewrap/m);
      expect(strict.stdout).not.toContain("Listening on");

      const standard = await startServerProcess({ dataDir: path.join(tmp.dir, "standard"), env: { WORKYARD_BWRAP: "/nonexistent/bwrap" } });
      try {
        // The warning goes to stderr, which may arrive after stdout's "Listening on".
        for (let i = 0; i < 50 && !standard.output().includes("NOT isolated"); i++) await new Promise((r) => setTimeout(r, 20));
        expect(standard.output()).toMatch(/^warning: workers are NOT isolated: .*apt-get install bubblewrap/m);
        expect(standard.output().match(/NOT isolated/g)).toHaveLength(1);
      } finally {
        await standard.kill();
      }
    } finally {
      tmp.cleanup();
    }
  });
});
