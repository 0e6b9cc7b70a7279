import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT } from "../helpers/paths.js";
import { ntn, type NtnResult } from "../helpers/run-ntn.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { tempDir } from "../helpers/tmp.js";
import { cliEnv, liveDeploymentId, fixtureDeps, writeProject } from "./fixtures.js";

const SANDBOXED_SOURCE = `import { Worker } from "@notionhq/workers";
import { j } from "@notionhq/workers/schema-builder";
import fs from "node:fs";
import path from "node:path";
import child_process from "node:child_process";

const worker = new Worker();
export default worker;
const none = j.object({});

worker.tool("whoami", {
  title: "whoami", description: "uid and environment", schema: none,
  execute: async () => ({ uid: process.getuid ? process.getuid() : null, env: { ...process.env } }),
});
worker.tool("read", {
  title: "read", description: "reads a file", schema: j.object({ path: j.string() }),
  execute: async ({ path }) => fs.readFileSync(path, "utf8"),
});
worker.tool("write", {
  title: "write", description: "writes a file", schema: j.object({ path: j.string() }),
  execute: async ({ path }) => { fs.writeFileSync(path, "evil"); return "written"; },
});
worker.tool("scratch", {
  title: "scratch", description: "writes and reads back a file in its own scratch dir", schema: none,
  execute: async () => {
    const file = path.join(process.env.TMPDIR ?? "", "note.txt");
    fs.writeFileSync(file, "mine");
    return fs.readFileSync(file, "utf8");
  },
});
worker.tool("fill", {
  title: "fill", description: "writes 100 MiB into its scratch dir", schema: none,
  execute: async () => {
    const file = path.join(process.env.TMPDIR ?? "", "big.bin");
    try {
      for (let i = 0; i < 100; i++) fs.appendFileSync(file, Buffer.alloc(1024 * 1024, 1));
      return "written";
    } catch (error) {
      return (error as NodeJS.ErrnoException).code ?? "error";
    } finally {
      fs.rmSync(file, { force: true });
    }
  },
});
const processId = Math.random().toString(36).slice(2);
worker.tool("which", { title: "which", description: "which process answers", schema: none, execute: async () => processId });
worker.tool("hogLater", {
  title: "hogLater", description: "returns, then holds 600 MiB from a timer", schema: none,
  execute: async () => {
    const hog: Buffer[] = [];
    setTimeout(() => { for (let i = 0; i < 6; i++) hog.push(Buffer.alloc(100 * 1024 * 1024, 1)); }, 200);
    return "later";
  },
});
worker.tool("spawn", {
  title: "spawn", description: "runs id", schema: none,
  execute: async () => child_process.execSync("id").toString(),
});
worker.tool("loop", {
  title: "loop", description: "never returns", schema: none,
  execute: async () => { for (;;) {} },
});
worker.tool("alloc", {
  title: "alloc", description: "allocates without bound", schema: none,
  execute: async () => { const kept: string[] = []; for (let i = 0; ; i++) kept.push("x".repeat(16 * 1024 * 1024) + i); },
});
worker.tool("spew", {
  title: "spew", description: "prints 3 MiB", schema: none,
  execute: async () => { const line = "y".repeat(1023); for (let i = 0; i < 3 * 1024; i++) console.log(line); return "done"; },
});
`;

const NEIGHBOUR_SOURCE = `import { Worker } from "@notionhq/workers";
import { j } from "@notionhq/workers/schema-builder";

const worker = new Worker();
export default worker;
worker.tool("hello", { title: "hello", description: "hello", schema: j.object({}), execute: async () => "hello" });
`;

const OWN_SECRET = `own-secret-${crypto.randomBytes(4).toString("hex")}`;
const NEIGHBOUR_SECRET = `neighbour-secret-${crypto.randomBytes(4).toString("hex")}`;
const SERVER_CANARY_NAME = "WORKYARD_TEST_SERVER_CANARY";
const SERVER_CANARY = `server-env-canary-${crypto.randomBytes(4).toString("hex")}`;

describe("worker isolation and limits (run timeout 4s, memory 64 MiB)", () => {
  let server: TestServer;
  let tmp: { dir: string; cleanup(): void };
  let project: string;
  let neighbourDeployment: string;
  let env: Record<string, string | undefined>;
  const run = (argv: string[]) => ntn(argv, { cwd: project, env });
  const workerId = () => (JSON.parse(fs.readFileSync(path.join(project, "workers.json"), "utf8")) as { workerId: string }).workerId;
  /** A run of our CLI that failed; answers the run as stored (GetRunLogs: logs and the run's row). */
  const failedRun = async (argv: string[]) => {
    const result = await run(argv);
    expect(result.code, result.stderr).toBe(5);
    expect(result.stdout).toBe("");
    const runId = /runs logs (\S+)/.exec(result.stderr)?.[1];
    expect(runId, result.stderr).toBeDefined();
    const stored = await server.call("GetRunLogs", { workerId: workerId(), runId });
    expect(stored.status).toBe(200);
    return { result, runId: runId!, logs: stored.body.logs as string, run: stored.body.run as { exitCode: number; status: string; error: string } };
  };
  /** The run fails on the permission model; `check` runs before the check of the recorded code. */
  const expectDenied = async (argv: string[], check?: (seen: string) => void) => {
    const { result, run: row, logs } = await failedRun(argv);
    expect(row).toMatchObject({ status: "failed", exitCode: 1 });
    expect(result.stderr).toMatch(/restricted|denied/i);
    check?.(`${result.stdout}\n${result.stderr}\n${row.error}\n${logs}`);
    // The permission model's own code, so the user knows the sandbox said no.
    expect(`${row.error}\n${logs}`).toContain("ERR_ACCESS_DENIED");
  };

  beforeAll(async () => {
    // The server runs in this process: the canary stays in its environment while workers run.
    process.env[SERVER_CANARY_NAME] = SERVER_CANARY;
    // 4 s: room for the allocating tool to reach its heap cap on a loaded machine (about 0.6 s idle).
    server = await startTestServer({ runTimeout: "4s", runMemoryMb: 64 });
    tmp = tempDir("wy-isolation-");
    const deps = fixtureDeps();
    env = cliEnv(server, path.join(tmp.dir, "home"));

    const neighbour = writeProject(path.join(tmp.dir, "neighbour"), deps, NEIGHBOUR_SOURCE);
    const set = await ntn(["workers", "deploy", "--name", "neighbour"], { cwd: neighbour, env });
    expect(set.code, set.stderr).toBe(0);
    neighbourDeployment = liveDeploymentId(set.stderr);
    expect((await ntn(["workers", "env", "set", `NEIGHBOUR_SECRET=${NEIGHBOUR_SECRET}`], { cwd: neighbour, env })).code).toBe(0);

    project = writeProject(path.join(tmp.dir, "sandboxed"), deps, SANDBOXED_SOURCE);
    const deployed = await run(["workers", "deploy", "--name", "sandboxed"]);
    expect(deployed.code, deployed.stderr).toBe(0);
    expect((await run(["workers", "env", "set", `OWN_SECRET=${OWN_SECRET}`])).code).toBe(0);
  });
  afterAll(async () => {
    delete process.env[SERVER_CANARY_NAME];
    await server?.stop();
    tmp?.cleanup();
  });

  it("the worker's environment holds its own secrets, not another worker's, nor the server's", async () => {
    const result = await run(["workers", "exec", "whoami"]);
    expect(result.code, result.stderr).toBe(0);
    const { env: workerEnv } = JSON.parse(result.stdout) as { env: Record<string, string> };
    expect(workerEnv.OWN_SECRET).toBe(OWN_SECRET);
    expect(workerEnv).not.toHaveProperty("NEIGHBOUR_SECRET");
    expect(workerEnv).not.toHaveProperty(SERVER_CANARY_NAME);
    expect(result.stdout).not.toContain(NEIGHBOUR_SECRET);
    expect(result.stdout).not.toContain(SERVER_CANARY);
    expect(result.stdout).not.toContain(server.adminToken);
    // Nothing of the server's own environment (its PATH, its HOME) either.
    expect(workerEnv.PATH).toBeUndefined();
    expect(workerEnv.HOME).not.toBe(process.env.HOME);
  });

  it.skipIf(process.getuid?.() !== 0)("runs the worker as its workspace's own uid (from --worker-uids) when the server runs as root", async () => {
    const result = await run(["workers", "exec", "whoami"]);
    // The default workspace is the first: the range's first uid plus one.
    expect(JSON.parse(result.stdout).uid).toBe(200001);
  });

  it("may write and read in its own scratch dir", async () => {
    const result = await run(["workers", "exec", "scratch"]);
    expect(result, result.stderr).toMatchObject({ code: 0, stdout: '"mine"\n' });
  });

  it("cannot fill the disk: its scratch dir is a tmpfs of 64 MiB (security review, finding 5)", async () => {
    const result = await run(["workers", "exec", "fill"]);
    expect(result, result.stderr).toMatchObject({ code: 0, stdout: '"ENOSPC"\n' });
  });

  it("a process that grows past its memory limit between runs is stopped too (security review, finding 4)", async () => {
    const before = JSON.parse((await run(["workers", "exec", "which"])).stdout);
    expect((await run(["workers", "exec", "hogLater"])).stdout).toBe('"later"\n');
    // The hog allocates 200 ms after answering; the watcher polls every 200 ms. A run that lands
    // on the process as it is stopped fails with it; the next one starts a new process. Bounded: 15 s.
    let after = before;
    for (const deadline = Date.now() + 15_000; after === before && Date.now() < deadline; ) {
      await new Promise((r) => setTimeout(r, 250));
      const which = await run(["workers", "exec", "which"]);
      if (which.code === 0) after = JSON.parse(which.stdout);
    }
    expect(after).not.toBe(before);
  });

  it("cannot read the server's master key", async () => {
    const file = path.join(server.dataDir, "master.key");
    const key = fs.readFileSync(file, "utf8").trim();
    await expectDenied(["workers", "exec", "read", "-d", JSON.stringify({ path: file })], (seen) => expect(seen).not.toContain(key));
  });

  it("cannot read the database file", async () => {
    const file = path.join(server.dataDir, "workyard.db");
    expect(fs.existsSync(file)).toBe(true);
    await expectDenied(["workers", "exec", "read", "-d", JSON.stringify({ path: file })]);
  });

  it("cannot read another worker's deployment", async () => {
    const file = path.join(server.dataDir, "deployments", neighbourDeployment, "index.mjs");
    expect(fs.existsSync(file)).toBe(true);
    await expectDenied(["workers", "exec", "read", "-d", JSON.stringify({ path: file })]);
  });

  it("cannot read the server's source", async () => {
    const file = path.join(ROOT, "packages/server/dist/main.js");
    expect(fs.existsSync(file)).toBe(true);
    await expectDenied(["workers", "exec", "read", "-d", JSON.stringify({ path: file })]);
  });

  it("cannot spawn a child process", async () => {
    await expectDenied(["workers", "exec", "spawn"]);
  });

  it("cannot write outside its scratch dir, and the file is not written", async () => {
    const target = path.join(os.tmpdir(), `wy-evil-${crypto.randomBytes(4).toString("hex")}`);
    try {
      await expectDenied(["workers", "exec", "write", "-d", JSON.stringify({ path: target })], () => expect(fs.existsSync(target)).toBe(false));
    } finally {
      fs.rmSync(target, { force: true });
    }
  });

  it("a tool that loops forever is stopped at the time limit (exit code 124), and the next run works", async () => {
    const { result, run: row } = await failedRun(["workers", "exec", "loop"]);
    expect(result.stderr).toMatch(/^error: .*time limit/m);
    expect(row).toMatchObject({ status: "failed", exitCode: 124, error: expect.stringMatching(/time limit/) });

    const next = await run(["workers", "exec", "whoami"]);
    expect(next.code, next.stderr).toBe(0);

    const listed = await run(["workers", "runs", "list", "--json"]);
    expect(JSON.parse(listed.stdout)).toContainEqual(expect.objectContaining({ name: "loop", exitCode: 124, status: "failed" }));
  });

  it("a tool that allocates without bound is stopped at the memory limit (exit code 137)", async () => {
    const { result, run: row } = await failedRun(["workers", "exec", "alloc"]);
    expect(result.stderr).toMatch(/^error: .*memory limit/m);
    expect(row).toMatchObject({ status: "failed", exitCode: 137, error: expect.stringMatching(/memory limit/) });
    const next = await run(["workers", "exec", "whoami"]);
    expect(next.code, next.stderr).toBe(0);
  });

  /** One run of the tool that prints 3 MiB, by whichever of the two tests below comes first. */
  let spewing: Promise<NtnResult> | undefined;
  const spewed = () => (spewing ??= run(["workers", "exec", "spew"]));

  it("a tool that prints megabytes finishes; its stored logs are capped, with a notice", async () => {
    const result = await spewed();
    expect(result).toMatchObject({ code: 0, stdout: '"done"\n' });
    const runs = (await server.call("ListRunsForWorker", { workerId: workerId() })).body.runs as { runId: string; name: string }[];
    const spew = runs.find((r) => r.name === "spew")!;
    const stored = await server.call("GetRunLogs", { workerId: workerId(), runId: spew.runId });
    const logs = stored.body.logs as string;
    expect(logs.length).toBeLessThan(3 * 1024 * 1024);
    expect(logs.length).toBeLessThanOrEqual(1024 * 1024 + 1024);
    expect(logs.startsWith("y".repeat(1023))).toBe(true);
    expect(logs).toMatch(/dropped|truncated/);
  });

  it("ntn workers runs logs prints a megabyte of logs whole", async () => {
    expect((await spewed()).code).toBe(0);
    const runs = (await server.call("ListRunsForWorker", { workerId: workerId() })).body.runs as { runId: string; name: string }[];
    const spew = runs.find((r) => r.name === "spew")!;
    const stored = (await server.call("GetRunLogs", { workerId: workerId(), runId: spew.runId })).body.logs as string;
    const printed = await run(["workers", "runs", "logs", spew.runId]);
    expect(printed.code).toBe(0);
    expect(printed.stdout.length).toBe(stored.length);
    expect(printed.stdout === stored).toBe(true);
  });
});
