/**
 * PullEnv and ListSecrets through the HTTP API on loopback with keep-alive, against a bare Node
 * HTTP server answering the same JSON in the same run (target: p50 within 0.3 ms of it), and the
 * time from `ntn server` start to its `Listening` line (target: under 300 ms).
 *
 *   npx tsx bench/api.ts [--concurrency 1] [--seconds 5] [--postgres]
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { startServer } from "../packages/server/src/main.js";
import { benchDatabase } from "./fixtures.js";
import { bareServer, client, fmt, header, load } from "./lib.js";

const { values } = parseArgs({
  options: {
    concurrency: { type: "string", default: "1" },
    seconds: { type: "string", default: "5" },
    postgres: { type: "boolean", default: false },
    starts: { type: "string", default: "10" },
  },
});
const concurrency = Number(values.concurrency);
const durationMs = Number(values.seconds) * 1000;

header(`API latency: PullEnv, ListSecrets (concurrency ${concurrency}, ${values.postgres ? "PostgreSQL" : "SQLite"})`);
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "wy-bench-api-"));
const { databaseUrl, drop: dropSchema } = await benchDatabase(values.postgres);
const server = await startServer({ port: 0, dataDir, logLevel: "warn", ...(databaseUrl ? { databaseUrl } : {}) });
const token = fs.readFileSync(path.join(dataDir, "admin-token"), "utf8").trim();
const api = client(server.url, concurrency);
const auth = { authorization: `Bearer ${token}` };
const created = JSON.parse((await api.post("/api/v3/workersCreateWorker", { name: "bench", uploadType: "source" }, auth)).text);
const workerId = created.worker.workerId as string;
const secrets = Array.from({ length: 10 }, (_, i) => ({ key: `SECRET_${i}`, value: `value-${i}-${"x".repeat(32)}` }));
await api.post("/api/v3/workersUpsertSecrets", { workerId, secrets }, auth);
const pulled = (await api.post("/api/v3/workersPullEnv", { workerId }, auth)).text;

const bare = await bareServer(JSON.parse(pulled));
const bareClient = client(bare.url, concurrency);
const baseline = await load(() => bareClient.post("/x", { workerId }), { concurrency, durationMs });
const pull = await load(() => api.post("/api/v3/workersPullEnv", { workerId }, auth), { concurrency, durationMs });
const list = await load(() => api.post("/api/v3/workersListSecrets", { workerId }, auth), { concurrency, durationMs });
console.log(`bare Node HTTP (same JSON)   ${fmt(baseline)}`);
console.log(`PullEnv (10 secrets)         ${fmt(pull)}   p50 +${((pull.p50 - baseline.p50) * 1000).toFixed(0)} µs`);
console.log(`ListSecrets (10 secrets)     ${fmt(list)}   p50 +${((list.p50 - baseline.p50) * 1000).toFixed(0)} µs`);
api.close();
bareClient.close();
await bare.stop();
await server.stop();
await dropSchema();
fs.rmSync(dataDir, { recursive: true, force: true });

header("Server start to `Listening on` (ntn server --port 0, existing data dir)");
const bin = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../packages/cli/bin/ntn.js");
const startDir = fs.mkdtempSync(path.join(os.tmpdir(), "wy-bench-start-"));
const times: number[] = [];
for (let i = 0; i <= Number(values.starts); i++) {
  const t0 = performance.now();
  const child = spawn(process.execPath, [bin, "server", "--port", "0", "--data-dir", startDir, "--log-level", "warn"], {
    env: { PATH: process.env.PATH, HOME: startDir, XDG_CONFIG_HOME: path.join(startDir, "config") },
    stdio: ["ignore", "pipe", "inherit"],
  });
  await new Promise<void>((resolve) => {
    let out = "";
    child.stdout.on("data", (c: Buffer) => {
      out += c.toString();
      if (out.includes("Listening on")) resolve();
    });
  });
  // The first start creates the store and keys; the figure is for the later ones.
  if (i > 0) times.push(performance.now() - t0);
  child.kill("SIGTERM");
  await new Promise((resolve) => child.on("exit", resolve));
}
times.sort((a, b) => a - b);
console.log(`start to Listening: p50 ${times[Math.floor(times.length / 2)]!.toFixed(0)} ms, max ${times.at(-1)!.toFixed(0)} ms (n=${times.length}; process spawn included)`);
fs.rmSync(startDir, { recursive: true, force: true });
