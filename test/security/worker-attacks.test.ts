/**
 * Issue 12, findings C3 (at run time), C4, H1, H2 and H4: a worker of workspace B attacks
 * workspace A's worker, the server and the machine's network, the way the review did. Every
 * destination is on loopback; what the policy must block elsewhere is tested on the policy itself
 * (packages/server/src/egress/policy.test.ts), with no socket opened.
 */
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { aad, seal } from "../../packages/server/src/vault/seal.js";
import { Keyring } from "../../packages/server/src/vault/keyring.js";
import { cliEnv, fixtureDeps, writeProject, type Deps } from "../build-run/fixtures.js";
import { ntn } from "../helpers/run-ntn.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { tempDir } from "../helpers/tmp.js";

const isRoot = process.getuid?.() === 0;

/** Every way out a worker might try, each answering what happened instead of throwing. */
const ATTACKER = `import { Worker } from "@notionhq/workers";
import { j } from "@notionhq/workers/schema-builder";
import child_process from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";

const worker = new Worker();
export default worker;
const attempt = async (fn: () => unknown) => {
  try {
    return { ok: true, value: await fn() };
  } catch (error) {
    const e = error as Error & { code?: string; cause?: Error & { code?: string } };
    return { ok: false, code: e.code ?? e.cause?.code ?? null, message: e.cause?.message ?? e.message };
  }
};
worker.tool("probe", {
  title: "probe", description: "who and where am I", schema: j.object({}),
  execute: async () => ({ uid: process.getuid!(), gid: process.getgid!(), pid: process.pid, hostname: os.hostname(), nodeOptions: process.env.NODE_OPTIONS ?? null, execArgv: process.execArgv }),
});
worker.tool("kill", {
  title: "kill", description: "signals a pid", schema: j.object({ pid: j.number() }),
  execute: async ({ pid }) => attempt(() => { process.kill(pid, "SIGKILL"); return "killed"; }),
});
worker.tool("fetch", {
  title: "fetch", description: "fetches a URL", schema: j.object({ url: j.string() }),
  execute: async ({ url }) => attempt(async () => { const r = await fetch(url); return { status: r.status, body: await r.text() }; }),
});
worker.tool("httpGet", {
  title: "httpGet", description: "GET with node:http", schema: j.object({ url: j.string() }),
  execute: async ({ url }) => attempt(() => new Promise((resolve, reject) => {
    http.get(url, (res) => { let body = ""; res.on("data", (c) => (body += c)); res.on("end", () => resolve({ status: res.statusCode, body })); }).on("error", reject);
  })),
});
worker.tool("connect", {
  title: "connect", description: "raw TCP to loopback", schema: j.object({ port: j.number() }),
  execute: async ({ port }) => attempt(() => new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => { socket.destroy(); resolve("connected"); });
    socket.on("error", reject);
  })),
});
worker.tool("read", {
  title: "read", description: "reads a file", schema: j.object({ path: j.string() }),
  execute: async ({ path }) => attempt(() => fs.readFileSync(path, "utf8")),
});
worker.tool("scribble", {
  title: "scribble", description: "writes to Workyard's message channel", schema: j.object({ bytes: j.number() }),
  execute: async ({ bytes }) => attempt(() => fs.writeSync(3, bytes > 0 ? "y".repeat(bytes) : "not json at all\\n")),
});
worker.tool("spawn", {
  title: "spawn", description: "runs id", schema: j.object({}),
  execute: async () => attempt(() => child_process.execSync("id").toString()),
});
`;

const VICTIM = `import { Worker } from "@notionhq/workers";
import { j } from "@notionhq/workers/schema-builder";
import os from "node:os";
const worker = new Worker();
export default worker;
worker.tool("hold", {
  title: "hold", description: "waits", schema: j.object({ ms: j.number() }),
  execute: async ({ ms }) => { await new Promise((r) => setTimeout(r, ms)); return "held"; },
});
worker.tool("probe", {
  title: "probe", description: "who am I", schema: j.object({}),
  execute: async () => ({ uid: process.getuid!(), gid: process.getgid!() }),
});
`;

describe("a worker of one workspace against another workspace, the server and the network (C3, C4, H1, H2, H4)", () => {
  let server: TestServer;
  let tmp: { dir: string; cleanup(): void };
  let deps: Deps;
  let allowed: http.Server;
  let forbidden: http.Server;
  let allowedPort: number;
  let forbiddenPort: number;
  const seenByAllowed: { url: string; host: string }[] = [];
  let forbiddenHits = 0;
  let victimDir: string;
  let attackerDir: string;
  let envA: Record<string, string | undefined>;
  let envB: Record<string, string | undefined>;
  let tokenB: string;

  const exec = async (dir: string, env: Record<string, string | undefined>, key: string, input: unknown = {}) => {
    const result = await ntn(["workers", "exec", key, "-d", JSON.stringify(input)], { cwd: dir, env });
    expect(result.code, result.stderr).toBe(0);
    return JSON.parse(result.stdout) as any;
  };
  const attack = (key: string, input: unknown = {}) => exec(attackerDir, envB, key, input);
  const workerId = (dir: string) => (JSON.parse(fs.readFileSync(path.join(dir, "workers.json"), "utf8")) as { workerId: string }).workerId;

  beforeAll(async () => {
    const listen = async (onRequest: http.RequestListener) => {
      const s = http.createServer(onRequest);
      await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
      return s;
    };
    allowed = await listen((req, res) => {
      seenByAllowed.push({ url: req.url ?? "", host: req.headers.host ?? "" });
      res.writeHead(200, { "content-type": "text/plain" }).end("hello from upstream");
    });
    forbidden = await listen((_req, res) => {
      forbiddenHits += 1;
      res.writeHead(200).end("you should not see this");
    });
    allowedPort = (allowed.address() as AddressInfo).port;
    forbiddenPort = (forbidden.address() as AddressInfo).port;
    server = await startTestServer({ egressAllow: [`127.0.0.1:${allowedPort}`] });
    tmp = tempDir("wy-worker-attacks-");
    deps = fixtureDeps();
    envA = cliEnv(server, path.join(tmp.dir, "home-a"));
    const created = await server.call("CreateWorkspace", { name: "Workspace B" });
    expect(created.status).toBe(200);
    tokenB = created.body.token;
    envB = cliEnv(server, path.join(tmp.dir, "home-b"), { NOTION_API_TOKEN: tokenB, NOTION_WORKSPACE_ID: created.body.workspaceId });

    victimDir = writeProject(path.join(tmp.dir, "victim"), deps, VICTIM);
    attackerDir = writeProject(path.join(tmp.dir, "attacker"), deps, ATTACKER);
    for (const [dir, env, name] of [
      [victimDir, envA, "victim"],
      [attackerDir, envB, "attacker"],
    ] as const) {
      const deployed = await ntn(["workers", "deploy", "--name", name], { cwd: dir, env, timeoutMs: 180_000 });
      expect(deployed.code, deployed.stderr).toBe(0);
    }
    expect((await ntn(["workers", "env", "set", "VICTIM_SECRET=victim-secret-value"], { cwd: victimDir, env: envA })).code).toBe(0);
  });
  afterAll(async () => {
    await server?.stop();
    await Promise.all([allowed, forbidden].map((s) => new Promise((resolve) => s?.close(resolve))));
    tmp?.cleanup();
  });

  it("H2: as root, each workspace's workers run as a uid of their own from the range, never root nor the server's", async () => {
    const a = await exec(victimDir, envA, "probe");
    const b = await attack("probe");
    expect(b.pid).toBe(1); // its own PID namespace: it is the first process there
    expect(b.hostname).toBe("workyard");
    if (!isRoot) return;
    expect(a.uid).toBe(200001);
    expect(b.uid).toBe(200002);
    expect(a.gid).toBe(200001);
    expect(b.gid).toBe(200002);
  });

  it.skipIf(!isRoot)("H1: B's worker cannot signal A's running worker, even knowing its pid on the host", async () => {
    const workerA = workerId(victimDir);
    const running = server.call("RunCapability", { workerId: workerA, capabilityKey: "hold", args: { ms: 4000 } });
    // A's worker process as the host sees it: its uid and our sandbox entry.
    let victimPid: number | undefined;
    for (let i = 0; i < 100 && victimPid === undefined; i++) {
      for (const entry of fs.readdirSync("/proc").filter((e) => /^\d+$/.test(e))) {
        try {
          const status = fs.readFileSync(`/proc/${entry}/status`, "utf8");
          const cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, "utf8");
          if (/^Uid:\s+200001\b/m.test(status) && cmdline.includes("/workyard/child.mjs")) victimPid = Number(entry);
        } catch {
          // gone
        }
      }
      if (victimPid === undefined) await new Promise((r) => setTimeout(r, 50));
    }
    expect(victimPid).toBeDefined();
    const killed = await attack("kill", { pid: victimPid });
    expect(killed).toMatchObject({ ok: false, code: "ESRCH" });
    const answer = await running;
    expect(answer.status).toBe(200);
    expect(answer.body.result).toBe("held");
  });

  it("C3: B's worker cannot read A's deployment, A's process environment, the data dir or the host's secrets", async () => {
    const deploymentsDir = path.join(server.dataDir, "deployments");
    const victimDeployment = fs.readdirSync(deploymentsDir).find((d) => fs.existsSync(path.join(deploymentsDir, d, "index.mjs")) && fs.readFileSync(path.join(deploymentsDir, d, "index.mjs"), "utf8").includes('"hold"'));
    expect(victimDeployment).toBeDefined();
    for (const file of [
      path.join(deploymentsDir, victimDeployment!, "index.mjs"),
      path.join(server.dataDir, "master.key"),
      path.join(server.dataDir, "admin-token"),
      path.join(server.dataDir, "workyard.db"),
      "/proc/1/environ",
      "/proc/self/mem",
      "/etc/shadow",
    ]) {
      const read = await attack("read", { path: file });
      expect(read.ok, file).toBe(false);
      expect(JSON.stringify(read)).not.toContain("victim-secret-value");
    }
  });

  it("C4: a NODE_OPTIONS secret is refused, and one stored before the rule is never given to the process", async () => {
    const refused = await server.call("UpsertSecrets", { workerId: workerId(attackerDir), secrets: [{ key: "NODE_OPTIONS", value: "--allow-child-process --allow-fs-read=*" }] }, tokenB);
    expect(refused.status).toBe(400);
    expect(refused.body.code).toBe("env_name_reserved");
    // As an older server would have stored it: sealed in the secrets table, then a version bump.
    const keyring = Keyring.fromFile(path.join(server.dataDir, "master.key"));
    const attacker = await server.server.store.db.selectFrom("workers").selectAll().where("id", "=", workerId(attackerDir)).executeTakeFirstOrThrow();
    const sealed = seal(keyring, "--allow-child-process --allow-fs-read=* --allow-worker --allow-addons", aad.secret(attacker.workspace_id, attacker.id, "NODE_OPTIONS"));
    await server.server.store.db
      .insertInto("secrets")
      .values({ workspace_id: attacker.workspace_id, worker_id: attacker.id, name: "NODE_OPTIONS", key_id: sealed.keyId, sealed: sealed.sealed, created_at: Date.now(), updated_at: Date.now() })
      .execute();
    await server.server.store.db.updateTable("workers").set({ secrets_version: attacker.secrets_version + 1 }).where("id", "=", attacker.id).execute();
    const probe = await attack("probe");
    expect(probe.nodeOptions).toBe("");
    expect(probe.execArgv).toContain("--experimental-permission");
    const spawned = await attack("spawn");
    expect(spawned).toMatchObject({ ok: false, code: "ERR_ACCESS_DENIED" });
  });

  it("review finding: a worker that writes garbage on Workyard's channel is stopped; the server keeps serving", async () => {
    for (const bytes of [0, 20 * 1024 * 1024]) {
      const result = await ntn(["workers", "exec", "scribble", "-d", JSON.stringify({ bytes })], { cwd: attackerDir, env: envB });
      expect(result.code).toBe(5);
      expect(result.stderr).toMatch(/on Workyard's channel and was stopped/);
      expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
      // The next run gets a new process.
      expect((await attack("probe")).pid).toBe(1);
    }
  });

  it.skipIf(!isRoot)("review finding: the worker's secrets never pass through the environment of bubblewrap or setpriv (root) or its own process", async () => {
    const running = server.call("RunCapability", { workerId: workerId(victimDir), capabilityKey: "hold", args: { ms: 2000 } });
    await new Promise((r) => setTimeout(r, 500));
    let seen = 0;
    for (const entry of fs.readdirSync("/proc").filter((e) => /^\d+$/.test(e))) {
      try {
        const cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, "utf8");
        if (!cmdline.includes("/workyard/child.mjs")) continue;
        seen += 1;
        expect(fs.readFileSync(`/proc/${entry}/environ`, "utf8")).not.toContain("victim-secret-value");
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "ENOENT" && (error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
      }
    }
    expect(seen).toBeGreaterThan(0);
    expect((await running).status).toBe(200);
  });

  it("H4: loopback services, the server's own API and PostgreSQL's port are denied with a clear error; the listener sees nothing", async () => {
    for (const url of [`http://127.0.0.1:${forbiddenPort}/`, `${server.url}/healthz`, "http://127.0.0.1:5432/", `http://localhost:${forbiddenPort}/`]) {
      const fetched = await attack("fetch", { url });
      expect(fetched.ok, url).toBe(false);
      expect(fetched.message, url).toMatch(/^egress denied: .*(127\.0\.0\.1|::1)\)?\]?:\d+ is a loopback address; allow it with --egress-allow$/);
      const got = await attack("httpGet", { url });
      expect(got.ok, url).toBe(false);
      expect(got.message, url).toMatch(/^egress denied: /);
    }
    expect(forbiddenHits).toBe(0);
  });

  it("H4: raw TCP has nowhere to go: the worker's network namespace holds loopback only", async () => {
    for (const port of [5432, forbiddenPort, Number(new URL(server.url).port)]) {
      const connected = await attack("connect", { port });
      expect(connected, String(port)).toMatchObject({ ok: false, code: "ECONNREFUSED" });
    }
    expect(forbiddenHits).toBe(0);
  });

  it("an upstream allowed with --egress-allow answers fetch and node:http through the gateway", async () => {
    const fetched = await attack("fetch", { url: `http://127.0.0.1:${allowedPort}/hello?x=1` });
    expect(fetched).toEqual({ ok: true, value: { status: 200, body: "hello from upstream" } });
    const got = await attack("httpGet", { url: `http://127.0.0.1:${allowedPort}/again` });
    expect(got).toEqual({ ok: true, value: { status: 200, body: "hello from upstream" } });
    expect(seenByAllowed).toEqual(
      expect.arrayContaining([
        { url: "/hello?x=1", host: `127.0.0.1:${allowedPort}` },
        { url: "/again", host: `127.0.0.1:${allowedPort}` },
      ]),
    );
  });
});
