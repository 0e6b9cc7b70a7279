/**
 * Background refresh of N connections expiring together, against a token endpoint with 20 ms
 * latency: time to refresh them all and provider requests per second, for 1,000 and 10,000
 * connections (how both grow), one server process on SQLite.
 *
 *   npx tsx bench/background.ts [--sizes 1000,10000] [--latency 20] [--concurrency 16]
 */
import path from "node:path";
import { parseArgs } from "node:util";
import { startServer } from "../packages/server/src/main.js";
import { Keyring } from "../packages/server/src/vault/keyring.js";
import { benchServer, deploy, makeProject } from "./fixtures.js";
import { header } from "./lib.js";
import { seedConnections } from "./seed.js";
import { oauthWorker, tokenEndpoint } from "./token-endpoint.js";

const { values } = parseArgs({
  options: {
    sizes: { type: "string", default: "1000,10000" },
    latency: { type: "string", default: "20" },
    concurrency: { type: "string", default: "16" },
  },
});

header(`Background refresh (provider latency ${values.latency} ms, ${values.concurrency} refreshes at once)`);
for (const size of values.sizes.split(",").map(Number)) {
  const provider = await tokenEndpoint(Number(values.latency));
  // Deploy the worker with background refresh off, seed, then restart with it on.
  const bench = await benchServer({ backgroundRefresh: false });
  const project = makeProject(oauthWorker(provider.origin), "bench-background");
  const { workerId } = await deploy(bench, project, "bench-background");
  const auth = { authorization: `Bearer ${bench.token}`, "content-type": "application/json" };
  await fetch(`${bench.server.url}/api/v3/workersUpsertSecrets`, {
    method: "POST",
    headers: auth,
    body: JSON.stringify({ workerId, secrets: [{ key: "BENCH_CLIENT_ID", value: "cid" }, { key: "BENCH_CLIENT_SECRET", value: "csec" }] }),
  });
  const keyring = Keyring.fromFile(path.join(bench.dataDir, "master.key"));
  const now = Date.now();
  await seedConnections(bench.server.store.db, keyring, { templateWorkerId: workerId, key: "benchAuth", count: size, nextRefreshAt: now, expiresAt: now + 120_000 });
  await bench.server.stop();

  provider.reset();
  const t0 = performance.now();
  const server = await startServer({ port: 0, dataDir: bench.dataDir, logLevel: "warn", egressAllow: ["127.0.0.1"], backgroundRefresh: true, refreshConcurrency: Number(values.concurrency) });
  const db = server.store.db;
  for (;;) {
    const row = await db
      .selectFrom("oauth_connections")
      .select((eb) => eb.fn.countAll<number>().as("n"))
      .where("last_refresh_at", "is not", null)
      .executeTakeFirstOrThrow();
    if (Number(row.n) >= size) break;
    if (performance.now() - t0 > 10 * 60_000) throw new Error(`only ${row.n} of ${size} refreshed after 10 minutes`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const seconds = (performance.now() - t0) / 1000;
  console.log(
    `${String(size).padStart(6)} connections: all refreshed in ${seconds.toFixed(1)} s, ${provider.requests} provider requests (${(provider.requests / seconds).toFixed(0)}/s), ${(size / seconds).toFixed(0)} refreshes/s`,
  );
  await server.stop();
  await bench.stop();
  await provider.stop();
}
