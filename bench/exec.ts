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
import { SandboxProcess } from "../packages/server/src/executor/sandbox.js";
import { benchServer, deploy, makeProject, TRIVIAL_TOOL } from "./fixtures.js";
import { client, fmt, header, ipcServer, loadInThread } from "./lib.js";

const { values } = parseArgs({
  options: {
    concurrency: { type: "string", default: "16" },
    seconds: { type: "string", default: "5" },
    colds: { type: "string", default: "10" },
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
const deploymentsDir = path.join(bench.dataDir, "deployments");
const bundleDir = path.join(deploymentsDir, fs.readdirSync(deploymentsDir).find((d) => !d.includes(".tmp"))!);
const times: number[] = [];
for (let i = 0; i < Number(values.colds); i++) {
  const t0 = performance.now();
  const sandbox = await SandboxProcess.start({
    entry: path.join(bench.dataDir, "runtime", "child.mjs"),
    bundleDir,
    nodeModules: fs.realpathSync(path.join(bundleDir, "node_modules")),
    scratchDir: path.join(bench.dataDir, "scratch", `cold-${i}`),
    env: {},
    memoryMb: 256,
  });
  await sandbox.run({ runId: `cold-${i}`, key: "ping", input: {}, env: {}, timeoutMs: 10_000, onLog: () => {} });
  times.push(performance.now() - t0);
  sandbox.kill();
}
times.sort((a, b) => a - b);
console.log(`cold start to first answer: p50 ${times[Math.floor(times.length / 2)]!.toFixed(0)} ms, min ${times[0]!.toFixed(0)} ms, max ${times.at(-1)!.toFixed(0)} ms (n=${times.length})`);

await bench.stop();
fs.rmSync(project, { recursive: true, force: true });
fs.rmSync(other, { recursive: true, force: true });
