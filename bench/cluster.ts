/**
 * Several server processes on one PostgreSQL: token reads at 64 concurrent clients (throughput,
 * p50/p99) for one process and for three; a refresh storm of 1,000 waiters on one expired token,
 * one process and three (provider requests, time to serve all); exec throughput of a trivial tool
 * at 16 clients with one, two and three processes.
 *
 *   npx tsx bench/cluster.ts [--seconds 5] [--storm 1000] [--latency 20]
 */
import crypto from "node:crypto";
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { openStore } from "../packages/server/src/store/db.js";
import { Keyring } from "../packages/server/src/vault/keyring.js";
import { freshSchema } from "../test/helpers/pg.js";
import { callAction, startServerProcess, type ServerProcess } from "../test/helpers/server-process.js";
import { makeProject, TRIVIAL_TOOL } from "./fixtures.js";
import { client, fmt, header, loadInThread, merge } from "./lib.js";
import { seedConnections } from "./seed.js";
import { oauthWorker, tokenEndpoint } from "./token-endpoint.js";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "5" },
    storm: { type: "string", default: "1000" },
    latency: { type: "string", default: "20" },
  },
});
const durationMs = Number(values.seconds) * 1000;
const NTN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../packages/cli/bin/ntn.js");

async function deployTo(url: string, token: string, dir: string, name: string): Promise<string> {
  const env = { PATH: process.env.PATH ?? "", HOME: dir, XDG_CONFIG_HOME: path.join(dir, ".config"), NOTION_API_BASE_URL: url, NOTION_API_TOKEN: token };
  const child = spawn(process.execPath, [NTN, "workers", "deploy", "--name", name], { cwd: dir, env, stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
  if ((await new Promise((resolve) => child.on("close", resolve))) !== 0) throw new Error(`deploy failed: ${stderr}`);
  return (JSON.parse(fs.readFileSync(path.join(dir, "workers.json"), "utf8")) as { workerId: string }).workerId;
}

const provider = await tokenEndpoint(Number(values.latency));
const schema = await freshSchema();
const masterKey = crypto.randomBytes(32).toString("base64");
const processes: ServerProcess[] = [await startServerProcess({ databaseUrl: schema.url, masterKey })];
const token = fs.readFileSync(path.join(processes[0]!.dataDir, "admin-token"), "utf8").trim();
const a = processes[0]!.url;
const oauthProject = makeProject(oauthWorker(provider.origin), "cluster-oauth");
const toolProject = makeProject(TRIVIAL_TOOL, "cluster-tool");
const oauthWorkerId = await deployTo(a, token, oauthProject, "cluster-oauth");
const toolWorkerId = await deployTo(a, token, toolProject, "cluster-tool");
await callAction(a, "UpsertSecrets", { workerId: oauthWorkerId, secrets: [{ key: "BENCH_CLIENT_ID", value: "cid" }, { key: "BENCH_CLIENT_SECRET", value: "csec" }] }, token);
processes.push(await startServerProcess({ databaseUrl: schema.url, masterKey }), await startServerProcess({ databaseUrl: schema.url, masterKey }));
const urls = processes.map((p) => p.url);

// The connection, seeded through the store: the worker itself holds it.
const store = await openStore({ dataDir: processes[0]!.dataDir, databaseUrl: schema.url });
const keyring = Keyring.fromEnv(masterKey);
async function seed(expiresAt: number): Promise<void> {
  await store.db.deleteFrom("oauth_connections").execute();
  const [id] = await seedConnections(store.db, keyring, { templateWorkerId: oauthWorkerId, key: "benchAuth", count: 1, nextRefreshAt: expiresAt - 60_000, expiresAt });
  // Requests name the seeded worker: it shares the deployment and the manifest.
  seededWorker = id!;
}
let seededWorker = "";
await seed(Date.now() + 3600_000);
const auth = { authorization: `Bearer ${token}` };
const tokenBody = () => ({ workerId: seededWorker, oauthCapabilityKey: "benchAuth" });

header("Token reads (GetOauthToken, stored token valid) at 64 concurrent clients, PostgreSQL");
for (const count of [1, 3]) {
  const targets = urls.slice(0, count);
  const parts = await Promise.all(
    targets.map((url) => loadInThread({ url, path: "/api/v3/workersGetOauthToken", body: tokenBody(), headers: auth, concurrency: Math.round(64 / count), durationMs })),
  );
  console.log(`${count} process${count > 1 ? "es" : "  "}   ${fmt(merge(parts))}`);
}

header(`Refresh storm: ${values.storm} concurrent GetOauthToken on one expired token (provider latency ${values.latency} ms), PostgreSQL`);
for (const count of [1, 3]) {
  await seed(Date.now() - 1000);
  provider.reset();
  const clients = urls.slice(0, count).map((url) => client(url, 100));
  const t0 = performance.now();
  const answers = await Promise.all(
    Array.from({ length: Number(values.storm) }, (_, i) => clients[i % count]!.post("/api/v3/workersGetOauthToken", tokenBody(), auth)),
  );
  const wall = performance.now() - t0;
  const tokens = new Set(answers.filter((r) => r.status === 200).map((r) => (JSON.parse(r.text) as { accessToken: string }).accessToken));
  const ok = answers.filter((r) => r.status === 200).length;
  console.log(`${count} process${count > 1 ? "es" : "  "}   provider requests ${provider.requests} (target 1); ${ok}/${answers.length} OK with ${tokens.size} distinct token(s); all served in ${wall.toFixed(0)} ms`);
  for (const c of clients) c.close();
}

header("Exec of a trivial tool at 16 concurrent clients, PostgreSQL");
const execBody = { workerId: toolWorkerId, capabilityKey: "ping", args: {}, stream: false };
for (const url of urls) await callAction(url, "RunCapability", execBody, token); // each process materialises the deployment
for (const count of [1, 2, 3]) {
  const targets = urls.slice(0, count);
  const parts = await Promise.all(
    targets.map((url) => loadInThread({ url, path: "/api/v3/workersRunCapability", body: execBody, headers: auth, concurrency: Math.round(16 / count), durationMs })),
  );
  console.log(`${count} process${count > 1 ? "es" : "  "}   ${fmt(merge(parts))}`);
}

await store.close();
for (const p of processes) await p.kill();
await schema.drop();
await provider.stop();
fs.rmSync(oauthProject, { recursive: true, force: true });
fs.rmSync(toolProject, { recursive: true, force: true });
