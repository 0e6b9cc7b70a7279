/**
 * Runs: warm exec of a trivial tool through the HTTP API at 16 concurrent clients, against a bare
 * Node HTTP server forwarding one IPC round trip to a warm child (same run; target p50 within
 * 1 ms); cold start of a deployment's process to its first answer (target < 300 ms with the real
 * SDK); redeploy with an unchanged lockfile, end to end (target < 1 s); a first deploy with a warm
 * npm cache.
 *
 *   npx tsx bench/exec.ts [--concurrency 16] [--seconds 5] [--colds 10]
 */
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import os from "node:os";
import { createEgressGateway } from "../packages/server/src/egress/gateway.js";
import { createEgressPolicy } from "../packages/server/src/egress/policy.js";
import { detectIsolation, type Isolation } from "../packages/server/src/executor/isolation.js";
import { childEntry, SandboxProcess } from "../packages/server/src/executor/sandbox.js";
import { benchServer, deploy, makeProject, TRIVIAL_TOOL } from "./fixtures.js";
import { client, fmt, header, ipcServer, loadInThread } from "./lib.js";

const { values } = parseArgs({
  options: {
    concurrency: { type: "string", default: "16" },
    seconds: { type: "string", default: "5" },
    colds: { type: "string", default: "10" },
    // A checkout of the server before namespaces (built, with its own node_modules), to start its
    // sandbox side by side: git worktree add /tmp/old b07f451 && (cd /tmp/old && npm ci).
    old: { type: "string" },
  },
});
const concurrency = Number(values.concurrency);
const durationMs = Number(values.seconds) * 1000;

const bench = await benchServer();
header("Deploys");
const project = makeProject(TRIVIAL_TOOL, "bench-exec");
const first = await deploy(bench, project, "bench-exec");
console.log(`first deploy, cold npm cache          ${first.ms.toFixed(0)} ms`);
const again = await deploy(bench, project);
console.log(`redeploy, unchanged lockfile          ${again.ms.toFixed(0)} ms (end to end: archive, upload, build, load, live)`);
const other = makeProject(TRIVIAL_TOOL, "bench-exec-two");
const warmCache = await deploy(bench, other, "bench-exec-two");
console.log(`first deploy of another lockfile,     ${warmCache.ms.toFixed(0)} ms (npm ci from the warm cache)`);

header(`Warm exec of a trivial tool (concurrency ${concurrency})`);
const ipc = await ipcServer();
const baseline = await loadInThread({ url: ipc.url, path: "/x", body: {}, concurrency, durationMs });
const api = client(bench.server.url, 1);
const auth = { authorization: `Bearer ${bench.token}` };
const body = { workerId: first.workerId, capabilityKey: "ping", args: {}, stream: false };
const probe = await api.post("/api/v3/workersRunCapability", body, auth);
if (probe.status !== 200) throw new Error(`exec failed: ${probe.text}`);
const exec = await loadInThread({ url: bench.server.url, path: "/api/v3/workersRunCapability", body, headers: auth, concurrency, durationMs });
console.log(`bare HTTP + one IPC round trip      ${fmt(baseline)}`);
console.log(`RunCapability (ping)                ${fmt(exec)}   p50 +${((exec.p50 - baseline.p50) * 1000).toFixed(0)} µs`);
api.close();
await ipc.stop();

header("Cold start: spawn of a deployment's process to its first run's answer");
// Side by side, interleaved: the namespaced sandbox (bubblewrap, the egress socket, the workspace's
// uid) against the plain one the server used before (a fork under Node's permission model).
const deploymentsDir = path.join(bench.dataDir, "deployments");
const bundleDir = path.join(deploymentsDir, fs.readdirSync(deploymentsDir).find((d) => !d.includes(".tmp"))!);
const namespaced = { ...(await detectIsolation({ mode: "standard", workerUids: { first: 200000, last: 299999 }, dataDir: bench.dataDir })), ...(process.env.NOCPU ? { cpu: undefined } : {}) };
const plain: Isolation = { ...namespaced, kind: "none", host: undefined, refusal: undefined, cpu: undefined };
const gateway = createEgressGateway({ policy: createEgressPolicy({ allow: [], deny: [] }), log: bench.server.log });
type Kind = "namespaces" | "plain" | "before";
const times: Record<Kind, number[]> = { namespaces: [], plain: [], before: [] };
// The sandbox as it was before this change: its own code, its own entry (no egress client).
const before = values.old
  ? {
      SandboxProcess: ((await import(path.resolve(values.old, "packages/server/src/executor/sandbox.ts"))) as { SandboxProcess: any }).SandboxProcess,
      entry: path.resolve(values.old, "packages/server/dist/executor/child.mjs"),
    }
  : undefined;
for (let i = 0; i < Number(values.colds); i++) {
  if (before) {
    const t0 = performance.now();
    const sandbox = await before.SandboxProcess.start({
      entry: before.entry,
      bundleDir,
      nodeModules: fs.realpathSync(path.join(bundleDir, "node_modules")),
      scratchDir: path.join(bench.dataDir, "scratch", `cold-before-${i}`),
      env: {},
      memoryMb: 256,
    });
    await sandbox.run({ runId: `cold-${i}`, key: "ping", input: {}, env: {}, timeoutMs: 10_000, onLog: () => {} });
    times.before.push(performance.now() - t0);
    sandbox.kill();
    await new Promise<void>((resolve) => sandbox.onExit(resolve));
  }
  for (const kind of ["namespaces", "plain"] as const) {
    const isolation = kind === "namespaces" ? namespaced : plain;
    const socket = path.join(os.tmpdir(), `wy-bench-${process.pid}-${i}.sock`);
    const t0 = performance.now();
    const listener = kind === "namespaces" ? await gateway.listen(socket, { identity: { workspaceId: "bench", purpose: "run" } }) : undefined;
    const sandbox = await SandboxProcess.start({
      entry: childEntry(),
      bundleDir,
      nodeModules: fs.realpathSync(path.join(bundleDir, "node_modules")),
      scratchDir: path.join(bench.dataDir, "scratch", `cold-${kind}-${i}`),
      env: {},
      memoryMb: 256,
      isolation,
      user: isolation.privileged && kind === "namespaces" ? isolation.userFor(1) : undefined,
      egressSocket: listener ? socket : undefined,
      cpuCores: 1,
    });
    await sandbox.run({ runId: `cold-${i}`, key: "ping", input: {}, env: {}, timeoutMs: 10_000, onLog: () => {} });
    times[kind].push(performance.now() - t0);
    sandbox.kill();
    await new Promise<void>((resolve) => sandbox.onExit(resolve));
    await listener?.close();
  }
}
const p50 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (const kind of ["before", "plain", "namespaces"] as const) {
  const sorted = [...times[kind]].sort((a, b) => a - b);
  if (sorted.length === 0) continue;
  console.log(`cold start, ${kind.padEnd(10)} p50 ${p50(sorted).toFixed(0)} ms, min ${sorted[0]!.toFixed(0)} ms, max ${sorted.at(-1)!.toFixed(0)} ms (n=${sorted.length})`);
}
const reference = times.before.length > 0 ? "before" : "plain";
console.log(`namespaces / ${reference}: ${(p50(times.namespaces) / p50(times[reference])).toFixed(2)}x (target at most 1.25x)`);
await gateway.close();

await bench.stop();
fs.rmSync(project, { recursive: true, force: true });
fs.rmSync(other, { recursive: true, force: true });
