/**
 * OAuth hot paths: GetOauthToken and PullEnv with a valid stored token, through the API on loopback
 * (target: p50 within 0.5 ms of PullEnv without OAuth, same run); and a refresh storm: 1,000
 * concurrent GetOauthToken calls on one expired token in one process (target: exactly 1 request at
 * the provider). Connections are seeded through the store; the token endpoint is the bench's own.
 *
 *   npx tsx bench/oauth.ts [--seconds 5] [--storm 1000] [--latency 20]
 */
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { Keyring } from "../packages/server/src/vault/keyring.js";
import { benchServer, deploy, makeProject, TRIVIAL_TOOL } from "./fixtures.js";
import { seedOauthConnection } from "./seed.js";
import { client, fmt, header, load } from "./lib.js";
import { oauthWorker, tokenEndpoint } from "./token-endpoint.js";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "5" },
    storm: { type: "string", default: "1000" },
    latency: { type: "string", default: "20" },
  },
});
const durationMs = Number(values.seconds) * 1000;

const provider = await tokenEndpoint(Number(values.latency));
const bench = await benchServer({ backgroundRefresh: false });
const oauthProject = makeProject(oauthWorker(provider.origin), "bench-oauth");
const plainProject = makeProject(TRIVIAL_TOOL, "bench-plain");
const withOauth = (await deploy(bench, oauthProject, "bench-oauth")).workerId;
const without = (await deploy(bench, plainProject, "bench-plain")).workerId;

const api = client(bench.server.url, 64);
const auth = { authorization: `Bearer ${bench.token}` };
const secrets = Array.from({ length: 10 }, (_, i) => ({ key: `SECRET_${i}`, value: `value-${i}` }));
for (const workerId of [withOauth, without]) await api.post("/api/v3/workersUpsertSecrets", { workerId, secrets }, auth);
await api.post("/api/v3/workersUpsertSecrets", { workerId: withOauth, secrets: [{ key: "BENCH_CLIENT_ID", value: "cid" }, { key: "BENCH_CLIENT_SECRET", value: "csec" }] }, auth);

// Seeded as a completed authorization would have stored it.
const keyring = Keyring.fromFile(path.join(bench.dataDir, "master.key"));
const seedConnection = (expiresAt: number) => seedOauthConnection(bench.server.store.db, keyring, withOauth, "benchAuth", expiresAt);
await seedConnection(Date.now() + 3600_000);

header("OAuth reads with a valid stored token (concurrency 1, SQLite)");
const plainPull = await load(() => api.post("/api/v3/workersPullEnv", { workerId: without }, auth), { concurrency: 1, durationMs });
const oauthPull = await load(() => api.post("/api/v3/workersPullEnv", { workerId: withOauth }, auth), { concurrency: 1, durationMs });
const getToken = await load(() => api.post("/api/v3/workersGetOauthToken", { workerId: withOauth, oauthCapabilityKey: "benchAuth" }, auth), { concurrency: 1, durationMs });
console.log(`PullEnv, no OAuth (10 secrets)       ${fmt(plainPull)}`);
console.log(`PullEnv, one connection (10 secrets) ${fmt(oauthPull)}   p50 +${((oauthPull.p50 - plainPull.p50) * 1000).toFixed(0)} µs`);
console.log(`GetOauthToken                        ${fmt(getToken)}   p50 ${((getToken.p50 - plainPull.p50) * 1000).toFixed(0)} µs vs PullEnv without OAuth`);
console.log(`provider requests during these reads: ${provider.requests} (expected 0)`);

header(`Refresh storm: ${values.storm} concurrent GetOauthToken on one expired token (provider latency ${values.latency} ms)`);
await seedConnection(Date.now() - 1000);
provider.reset();
const stormClient = client(bench.server.url, 256);
const t0 = performance.now();
const answers = await Promise.all(
  Array.from({ length: Number(values.storm) }, () => stormClient.post("/api/v3/workersGetOauthToken", { workerId: withOauth, oauthCapabilityKey: "benchAuth" }, auth)),
);
const wall = performance.now() - t0;
const tokens = new Set(answers.map((a) => (a.status === 200 ? (JSON.parse(a.text) as { accessToken: string }).accessToken : `status ${a.status}`)));
console.log(`provider token requests: ${provider.requests} (target 1)`);
console.log(`answers: ${answers.filter((a) => a.status === 200).length}/${answers.length} OK, ${tokens.size} distinct token(s), all served in ${wall.toFixed(0)} ms`);

api.close();
stormClient.close();
await bench.stop();
await provider.stop();
fs.rmSync(oauthProject, { recursive: true, force: true });
fs.rmSync(plainProject, { recursive: true, force: true });
