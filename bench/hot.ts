/**
 * The hot paths against their floors (issue 14), measured in the same run, interleaved round by
 * round: RunCapability of a trivial tool against bare HTTP + one IPC round trip to a warm child
 * (target p50 at most 1.5x at 1 connection, throughput at least 75 % of it at 16); GetOauthToken
 * and PullEnv with a valid stored token against a bare node:http server answering the same JSON
 * (target p50 at most 1.5x, throughput at least 50 % at 16). Every answer is checked. With
 * --postgres, the database round trips of each hot path are counted (target: at most one).
 *
 *   npx tsx bench/hot.ts [--seconds 3] [--rounds 3] [--postgres] [--client thread|process]
 *                        [--only run|token|pull] [--connections N] [--runs-per-process N]
 *
 * --client process runs each load from a Node process of its own (a client outside the server's
 * process); the default is a worker thread of the bench process.
 */
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { Keyring } from "../packages/server/src/vault/keyring.js";
import { benchDatabase, benchServer, deploy, makeProject, TRIVIAL_TOOL } from "./fixtures.js";
import { bareServer, client, countPostgresRoundTrips, header, ipcServer, loadInProcess, loadInThread, type Stats } from "./lib.js";
import { seedOauthConnection } from "./seed.js";
import { oauthWorker, tokenEndpoint } from "./token-endpoint.js";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "3" },
    rounds: { type: "string", default: "3" },
    postgres: { type: "boolean", default: false },
    client: { type: "string", default: "thread" },
    // One hot path and one concurrency only (with its baseline), for a profile: `--only token --connections 16`.
    only: { type: "string" },
    connections: { type: "string" },
    // Runs a worker process takes at once (the server's --runs-per-process; 1: one at a time).
    "runs-per-process": { type: "string" },
  },
});
const durationMs = Number(values.seconds) * 1000;
const rounds = Number(values.rounds);
const loadWith = values.client === "process" ? loadInProcess : loadInThread;

const roundTrips = await countPostgresRoundTrips();

const { databaseUrl, drop: dropSchema } = await benchDatabase(values.postgres);

const provider = await tokenEndpoint(20);
const bench = await benchServer({
  backgroundRefresh: false,
  ...(databaseUrl ? { databaseUrl } : {}),
  ...(values["runs-per-process"] ? { runsPerProcess: Number(values["runs-per-process"]) } : {}),
});
const trivialProject = makeProject(TRIVIAL_TOOL, "bench-hot-run");
const oauthProject = makeProject(oauthWorker(provider.origin), "bench-hot-oauth");
const runWorker = (await deploy(bench, trivialProject, "bench-hot-run")).workerId;
const oauthWorkerId = (await deploy(bench, oauthProject, "bench-hot-oauth")).workerId;
const api = client(bench.server.url, 1);
const auth = { authorization: `Bearer ${bench.token}` };
const secrets = [
  { key: "BENCH_CLIENT_ID", value: "cid" },
  { key: "BENCH_CLIENT_SECRET", value: "csec" },
  ...Array.from({ length: 3 }, (_, i) => ({ key: `SECRET_${i}`, value: `value-${i}` })),
];
await api.post("/api/v3/workersUpsertSecrets", { workerId: oauthWorkerId, secrets }, auth);
const keyring = Keyring.fromFile(path.join(bench.dataDir, "master.key"));
await seedOauthConnection(bench.server.store.db, keyring, oauthWorkerId, "benchAuth", Date.now() + 24 * 3600_000);

const targets = {
  run: { path: "/api/v3/workersRunCapability", body: { workerId: runWorker, capabilityKey: "ping", args: {}, stream: false }, expect: '"result"' },
  token: { path: "/api/v3/workersGetOauthToken", body: { workerId: oauthWorkerId, oauthCapabilityKey: "benchAuth" }, expect: '"accessToken"' },
  pull: { path: "/api/v3/workersPullEnv", body: { workerId: oauthWorkerId }, expect: '"SECRET_2"' },
};
for (const [name, t] of Object.entries(targets)) {
  const answer = await api.post(t.path, t.body, auth);
  if (answer.status !== 200 || !answer.text.includes(t.expect)) throw new Error(`${name}: ${answer.status} ${answer.text}`);
}
const pulled = (await api.post(targets.pull.path, targets.pull.body, auth)).text;
const bare = await bareServer(JSON.parse(pulled));
const ipc = await ipcServer();

// Database round trips per request in the steady state (after the requests above warmed it).
if (values.postgres) {
  header("PostgreSQL round trips per request (steady state, 200 requests each)");
  for (const [name, t] of Object.entries(targets)) {
    const before = roundTrips();
    for (let i = 0; i < 200; i++) await api.post(t.path, t.body, auth);
    // Records that leave the request path (the run journal) commit just after: counted too.
    await bench.server.store.db.selectFrom("workers").select("id").limit(1).execute();
    console.log(`${name.padEnd(6)} ${((roundTrips() - before - 1) / 200).toFixed(2)} round trips per request`);
  }
}

type Name = "bare" | "ipc" | keyof typeof targets;
const measure = (name: Name, concurrency: number): Promise<Stats> => {
  if (name === "bare") return loadWith({ url: bare.url, path: "/x", body: targets.pull.body, concurrency, durationMs, expect: '"SECRET_2"' });
  if (name === "ipc") return loadWith({ url: ipc.url, path: "/x", body: {}, concurrency, durationMs, expect: '"ok":true' });
  const t = targets[name];
  return loadWith({ url: bench.server.url, path: t.path, body: t.body, headers: auth, concurrency, durationMs, expect: t.expect });
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

for (const concurrency of values.connections ? [Number(values.connections)] : [1, 16]) {
  header(`Hot paths, ${concurrency} connection${concurrency > 1 ? "s" : ""}, ${values.postgres ? "PostgreSQL" : "SQLite"}, client in a ${values.client === "process" ? "process of its own" : "worker thread"} (median of ${rounds} interleaved rounds of ${values.seconds} s)`);
  const seen: Record<Name, Stats[]> = { bare: [], ipc: [], run: [], token: [], pull: [] };
  for (let round = 0; round < rounds; round++) {
    for (const name of Object.keys(seen) as Name[]) {
      if (values.only && name !== values.only && name !== (values.only === "run" ? "ipc" : "bare")) continue;
      seen[name].push(await measure(name, concurrency));
    }
  }
  const p50 = (name: Name) => median(seen[name].map((s) => s.p50));
  const p99 = (name: Name) => median(seen[name].map((s) => s.p99));
  const rps = (name: Name) => median(seen[name].map((s) => s.throughput));
  const bad = (name: Name) => seen[name].reduce((sum, s) => sum + (s.bad ?? 0), 0);
  const line = (label: string, name: Name, floor?: Name) => {
    if (seen[name].length === 0) return;
    const ratio = floor ? `   p50 ${(p50(name) / p50(floor)).toFixed(2)}x, throughput ${((rps(name) / rps(floor)) * 100).toFixed(0)} % of ${floor === "ipc" ? "HTTP + IPC" : "bare"}` : "";
    const wrong = bad(name) ? `   ${bad(name)} BAD ANSWERS (${seen[name].find((s) => s.firstBad)?.firstBad})` : "";
    console.log(`${label.padEnd(34)} p50 ${(p50(name) * 1000).toFixed(0).padStart(5)} µs  p99 ${(p99(name) * 1000).toFixed(0).padStart(6)} µs  ${rps(name).toFixed(0).padStart(6)} req/s${ratio}${wrong}`);
  };
  line("bare node:http (PullEnv's JSON)", "bare");
  line("node:http + one IPC round trip", "ipc");
  line("RunCapability (trivial tool)", "run", "ipc");
  line("GetOauthToken (valid stored token)", "token", "bare");
  line("PullEnv (3 secrets, one token)", "pull", "bare");
}
console.log(`provider requests during the bench: ${provider.requests} (expected 0)`);

api.close();
await ipc.stop();
await bare.stop();
await bench.stop();
await provider.stop();
await dropSchema();
for (const dir of [trivialProject, oauthProject]) fs.rmSync(dir, { recursive: true, force: true });
