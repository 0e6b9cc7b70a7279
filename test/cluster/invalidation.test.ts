/**
 * Issue 14: the hot paths answer from memory (the API token, the worker, its live deployment), and
 * what changes through one server process takes effect on all three within 1 s, each one having
 * just answered from what it kept: a revoked token is refused, a deleted worker is gone and its
 * warm processes (which hold its decrypted secrets) stop without waiting for a request, a new
 * deployment is the one that runs, new secrets are the ones a run gets. (Issue 13, fix 3, had the
 * other processes stop a deleted worker's processes only at their next request for it.) The same
 * holds for OAuth connections, whose rows (tokens sealed) are kept for token reads: a refreshed
 * token and a revocation are what every process answers within 1 s.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DIALECTS } from "../helpers/dialects.js";
import { scaffoldProjects, startCluster, type Cluster, type Projects } from "../helpers/cluster.js";
import { authorizeOverHttp, openPage } from "../helpers/http-browser.js";
import { fingerprint, oauthWorkerSource } from "../helpers/oauth-bench.js";
import type { ServerProcess } from "../helpers/server-process.js";
import { startProvider, type TestProvider } from "../helpers/start-provider.js";

const source = (version: string) => `import { Worker } from "@notionhq/workers";
import { j } from "@notionhq/workers/schema-builder";
const worker = new Worker();
export default worker;
worker.tool("version", { title: "version", description: "which deployment runs", schema: j.object({}), execute: async () => "${version}" });
worker.tool("secret", { title: "secret", description: "a secret", schema: j.object({}), execute: async () => process.env.SETTING ?? null });
`;

/** Within this long of the change's answer, every process must show it. */
const PROPAGATION_MS = 1000;

/**
 * Worker processes of these deployments started by a server with this data dir, alive now, as the
 * host sees them (their bundle is mounted from its deployments folder).
 */
function processesOf(dataDir: string, deploymentIds: string[]): number {
  let count = 0;
  for (const entry of fs.readdirSync("/proc").filter((e) => /^\d+$/.test(e))) {
    try {
      if (!fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").includes("/workyard/child.mjs")) continue;
      const mounts = fs.readFileSync(`/proc/${entry}/mountinfo`, "utf8");
      if (deploymentIds.some((id) => mounts.includes(`${dataDir}/deployments/${id}`))) count += 1;
    } catch {
      // gone meanwhile
    }
  }
  return count;
}

/**
 * Polls `check` on every process until each passes, at most PROPAGATION_MS from `since`; answers
 * how long each took. A process that did not pass in time fails the test with what it last said.
 */
async function everywhereWithin(
  procs: ServerProcess[],
  since: number,
  check: (proc: ServerProcess) => Promise<true | string>,
  withinMs = PROPAGATION_MS,
): Promise<number[]> {
  return Promise.all(
    procs.map(async (proc) => {
      let last: true | string = "not checked";
      while (Date.now() - since <= withinMs) {
        last = await check(proc);
        if (last === true) return Date.now() - since;
        await new Promise((r) => setTimeout(r, 20));
      }
      last = await check(proc);
      expect(last, `${proc.url}, ${Date.now() - since} ms after the change`).toBe(true);
      return Date.now() - since;
    }),
  );
}

describe.skipIf(!DIALECTS.includes("postgres"))("changes through one process take effect on all three within 1 s (PostgreSQL, LISTEN/NOTIFY)", () => {
  let cluster: Cluster;
  let projects: Projects;
  let procs: ServerProcess[];
  let provider: TestProvider;

  beforeAll(async () => {
    cluster = await startCluster(3);
    procs = cluster.processes;
    projects = await scaffoldProjects(cluster);
    provider = await startProvider({ redirectUris: [`${procs[0]!.url}/workers/oauth/callback`], accessTokenTtl: 600 });
  }, 240_000);
  afterAll(async () => {
    await cluster?.stop();
    projects?.cleanup();
    await provider?.stop();
  });

  const run = (proc: ServerProcess, workerId: string, capabilityKey: string, token?: string) =>
    cluster.call(proc, "RunCapability", { workerId, capabilityKey, args: {} }, token);
  /** From now, within PROPAGATION_MS, the tool answers `expected` on every process. */
  const answersEverywhere = (workerId: string, capabilityKey: string, expected: string) =>
    everywhereWithin(procs, Date.now(), async (proc) => {
      const answer = await run(proc, workerId, capabilityKey);
      return answer.body.result === expected || `${answer.status} ${JSON.stringify(answer.body)}`;
    });

  it("a revoked API token is refused by every process, each having just accepted it", async () => {
    const minted = await cluster.call(procs[0]!, "CreateToken", { name: "revoked soon" });
    expect(minted.status, JSON.stringify(minted.body)).toBe(200);
    const token = minted.body.token as string;
    // Each process authenticates it (and keeps it in memory) a few times.
    for (const proc of procs) for (let i = 0; i < 3; i++) expect((await cluster.call(proc, "ListWorkers", {}, token)).status).toBe(200);

    const revoked = await cluster.call(procs[1]!, "RevokeToken", { tokenId: minted.body.id });
    expect(revoked.status, JSON.stringify(revoked.body)).toBe(200);
    const since = Date.now();
    const took = await everywhereWithin(procs, since, async (proc) => {
      const answer = await cluster.call(proc, "ListWorkers", {}, token);
      return answer.status === 401 || `${answer.status} ${JSON.stringify(answer.body)}`;
    });
    console.log(`revocation seen by the three processes after ${took.join(", ")} ms`);
    // And it stays refused.
    for (const proc of procs) expect((await cluster.call(proc, "ListWorkers", {}, token)).body.code).toBe("unauthorized");
  });

  it("a process that lost its LISTEN connection keeps nothing from before, and hears changes again once it listens again", async () => {
    const listeners = procs.slice(1).map((proc) => `workyard-changes-${proc.pid}`);
    const listening = async () => (await cluster.sql<{ n: number }>("select count(*)::int as n from pg_stat_activity where application_name = any($1)", [listeners]))[0]!.n;
    expect(await listening()).toBe(2);
    const tokenUsedEverywhere = async (name: string) => {
      const minted = await cluster.call(procs[0]!, "CreateToken", { name });
      for (const proc of procs) for (let i = 0; i < 3; i++) expect((await cluster.call(proc, "ListWorkers", {}, minted.body.token)).status).toBe(200);
      return minted.body as { token: string; id: string };
    };
    const refusedEverywhere = async (token: { token: string; id: string }, withinMs?: number) => {
      expect((await cluster.call(procs[0]!, "RevokeToken", { tokenId: token.id })).status).toBe(200);
      await everywhereWithin(
        procs,
        Date.now(),
        async (proc) => {
          const answer = await cluster.call(proc, "ListWorkers", {}, token.token);
          return answer.status === 401 || `${answer.status}`;
        },
        withinMs,
      );
    };

    // Processes 2 and 3 lose their listening connections; the revocation goes out at once, unheard
    // by them, and is seen before they could listen again (they try once a second): what they kept
    // went with the connection.
    const first = await tokenUsedEverywhere("before the loss");
    await cluster.sql("select pg_terminate_backend(pid) from pg_stat_activity where application_name = any($1)", [listeners]);
    await refusedEverywhere(first, 500);
    // They listen again (one reconnect a second), and hear what is published from then on.
    const deadline = Date.now() + 10_000;
    while ((await listening()) < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(await listening()).toBe(2);
    await refusedEverywhere(await tokenUsedEverywhere("after the loss"));
  });

  it("a new deployment is the one that runs on every process", async () => {
    const dir = projects.project("redeployed", source("v1"));
    const workerId = await projects.deploy(procs[0]!.url, dir);
    for (const proc of procs) for (let i = 0; i < 3; i++) expect((await run(proc, workerId, "version")).body.result).toBe("v1");

    fs.writeFileSync(path.join(dir, "src", "index.ts"), source("v2"));
    await projects.deploy(procs[2]!.url, dir);
    await answersEverywhere(workerId, "version", "v2");
  });

  it("new secrets are the ones a run gets on every process", async () => {
    const workerId = await projects.deploy(procs[0]!.url, projects.project("configured", source("v1")));
    const set = (value: string) => cluster.call(procs[1]!, "UpsertSecrets", { workerId, secrets: [{ key: "SETTING", value }] });
    expect((await set("first")).status).toBe(200);
    for (const proc of procs) for (let i = 0; i < 3; i++) expect((await run(proc, workerId, "secret")).body.result).toBe("first");

    expect((await set("second")).status).toBe(200);
    await answersEverywhere(workerId, "secret", "second");
  });

  it("an OAuth connection's refreshed token, then its revocation, are what every process answers", async () => {
    const A = procs[0]!;
    const workerId = await projects.deploy(
      A.url,
      projects.project("connected", oauthWorkerSource({ authorizationEndpoint: provider.authorizationEndpoint, tokenEndpoint: provider.tokenEndpoint, resourceUrl: provider.resourceUrl })),
    );
    const secrets = [
      { key: "GITHUB_CLIENT_ID", value: provider.clientId },
      { key: "GITHUB_CLIENT_SECRET", value: provider.clientSecret },
    ];
    expect((await cluster.call(A, "UpsertSecrets", { workerId, secrets })).status).toBe(200);
    const started = await cluster.call(A, "StartOauth", { workerId, oauthCapabilityKey: "githubAuth" });
    expect(started.status, JSON.stringify(started.body)).toBe(200);
    const outcome = await authorizeOverHttp(started.body.authorizationUrl, { callbackPrefix: `${A.url}/workers/oauth/callback` });
    expect((await openPage(outcome.callbackUrl!)).status).toBe(200);
    const tokenOn = (proc: ServerProcess, refresh = false) => cluster.call(proc, "GetOauthToken", { workerId, oauthCapabilityKey: "githubAuth", refresh });

    // Every process answers (and keeps in memory) the first token a few times.
    const first = (await tokenOn(A)).body.accessToken as string;
    for (const proc of procs) for (let i = 0; i < 3; i++) expect(fingerprint((await tokenOn(proc)).body.accessToken)).toBe(fingerprint(first));

    const refreshed = await tokenOn(procs[1]!, true);
    expect(refreshed.status, JSON.stringify(refreshed.body)).toBe(200);
    const second = refreshed.body.accessToken as string;
    expect(fingerprint(second)).not.toBe(fingerprint(first));
    await everywhereWithin(procs, Date.now(), async (proc) => {
      const answer = await tokenOn(proc);
      return answer.body.accessToken === second || `${answer.status} ${answer.body.accessToken ? fingerprint(answer.body.accessToken) : JSON.stringify(answer.body)}`;
    });

    expect((await cluster.call(procs[2]!, "RevokeOauth", { workerId, oauthCapabilityKey: "githubAuth" })).status).toBe(200);
    await everywhereWithin(procs, Date.now(), async (proc) => {
      const answer = await tokenOn(proc);
      return answer.body.code === "oauth_not_connected" || `${answer.status} ${answer.body.accessToken ? fingerprint(answer.body.accessToken) : JSON.stringify(answer.body)}`;
    });
  });

  it("a deleted worker is gone on every process, and its warm processes stop without waiting for a request", async () => {
    const workerId = await projects.deploy(procs[0]!.url, projects.project("doomed", source("v1")));
    const deployments = (await cluster.sql<{ id: string }>("select id from deployments where worker_id = $1", [workerId])).map((d) => d.id);
    for (const proc of procs) {
      for (let i = 0; i < 3; i++) expect((await run(proc, workerId, "version")).status).toBe(200);
      expect(processesOf(proc.dataDir, deployments)).toBeGreaterThan(0);
    }

    expect((await cluster.call(procs[1]!, "DeleteWorker", { workerId })).status).toBe(200);
    const since = Date.now();
    // No request for it reaches any process until its processes are gone.
    await everywhereWithin(procs, since, async (proc) => processesOf(proc.dataDir, deployments) === 0 || `${processesOf(proc.dataDir, deployments)} worker processes left`);
    for (const proc of procs) {
      const answer = await run(proc, workerId, "version");
      expect(answer.status, JSON.stringify(answer.body)).toBe(404);
    }
  });
});
