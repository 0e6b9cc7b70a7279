/**
 * One refresh cluster-wide: 1,000 concurrent requests for an expired token, spread over three
 * processes on one PostgreSQL, cause exactly one refresh_token grant at the provider, and every
 * answer carries the token that refresh produced.
 */
import http from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callThrough, resourceStatus, scaffoldProjects, startCluster, type Cluster, type Projects } from "../helpers/cluster.js";
import { authorizeOverHttp, openPage } from "../helpers/http-browser.js";
import { oauthWorkerSource } from "../helpers/oauth-bench.js";
import { postgresAvailable } from "../helpers/pg.js";
import { startQuirkProxy, type QuirkProxy } from "../helpers/quirk-proxy.js";
import type { ServerProcess } from "../helpers/server-process.js";
import { startProvider, type TestProvider } from "../helpers/start-provider.js";

const hasPg = await postgresAvailable();

const REQUESTS = 1000;
const SOCKETS_PER_PROCESS = 100;

let cluster: Cluster;
let projects: Projects;
let provider: TestProvider;
let proxy: QuirkProxy;
let processes: ServerProcess[];
let workerId: string;

const refreshRequests = () => proxy.requests.filter((r) => r.grantType === "refresh_token");

interface ConnectionRow {
  version: number;
  lease_owner: string | null;
  status: string;
  access_expires_at: number;
}

async function connectionRow(): Promise<ConnectionRow> {
  const rows = await cluster.sql<ConnectionRow>(
    "select version, lease_owner, status, access_expires_at from oauth_connections where worker_id = $1 and capability_key = 'githubAuth'",
    [workerId],
  );
  expect(rows).toHaveLength(1);
  return rows[0]!;
}

describe.skipIf(!hasPg)("a refresh storm on three processes", () => {
  beforeAll(async () => {
    cluster = await startCluster(3);
    processes = cluster.processes.slice();
    const A = processes[0]!;
    proxy = await startQuirkProxy();
    provider = await startProvider({ redirectUris: [`${A.url}/workers/oauth/callback`], accessTokenTtl: 600 });
    proxy.target = provider.tokenEndpoint;
    projects = await scaffoldProjects(cluster);
    const dir = projects.project(
      "storm",
      oauthWorkerSource({ authorizationEndpoint: provider.authorizationEndpoint, tokenEndpoint: proxy.tokenEndpoint, resourceUrl: provider.resourceUrl }),
    );
    workerId = await projects.deploy(A.url, dir);
    const secrets = await cluster.call(A, "UpsertSecrets", {
      workerId,
      secrets: [
        { key: "GITHUB_CLIENT_ID", value: provider.clientId },
        { key: "GITHUB_CLIENT_SECRET", value: provider.clientSecret },
      ],
    });
    expect(secrets.status, JSON.stringify(secrets.body)).toBe(200);
    const started = await cluster.call(A, "StartOauth", { workerId, oauthCapabilityKey: "githubAuth" });
    expect(started.status, JSON.stringify(started.body)).toBe(200);
    const outcome = await authorizeOverHttp(started.body.authorizationUrl, { callbackPrefix: `${A.url}/workers/oauth/callback` });
    const page = await openPage(outcome.callbackUrl!);
    expect(page.status, page.text).toBe(200);
  }, 240_000);

  afterAll(async () => {
    await cluster?.stop();
    await proxy?.stop();
    await provider?.stop();
    projects?.cleanup();
  });

  it.each([1, 2])("storm %i: 1,000 concurrent GetOauthToken for an expired token cause one refresh, and all get its token", async () => {
    // Every process has read the connection and the worker's manifest already.
    const warm = await Promise.all(processes.map((p) => cluster.call(p, "GetOauthToken", { workerId, oauthCapabilityKey: "githubAuth" })));
    for (const answer of warm) expect(answer.status, JSON.stringify(answer.body)).toBe(200);
    const old = warm[0]!.body.accessToken as string;
    expect(new Set(warm.map((a) => a.body.accessToken))).toEqual(new Set([old]));

    // The access token expires (as the store sees it), and a provider that takes ~50 ms to answer.
    await cluster.sql("update oauth_connections set access_expires_at = $1 where worker_id = $2", [Date.now() - 1000, workerId]);
    await cluster.announce({ table: "oauth_connections", id: `${workerId}/githubAuth` });
    const before = await connectionRow();
    proxy.setMode("pass", { latencyMs: 50 });
    const refreshesBefore = refreshRequests().length;
    const grantsBefore = provider.grants.success.refresh_token ?? 0;

    const agents = processes.map(() => new http.Agent({ keepAlive: true, maxSockets: SOCKETS_PER_PROCESS }));
    let answers: { status: number; body: any }[];
    try {
      answers = await Promise.all(
        Array.from({ length: REQUESTS }, (_, i) =>
          callThrough(agents[i % processes.length]!, processes[i % processes.length]!.url, "GetOauthToken", { workerId, oauthCapabilityKey: "githubAuth" }, cluster.adminToken),
        ),
      );
    } finally {
      for (const agent of agents) agent.destroy();
    }

    const failures = answers.filter((a) => a.status !== 200);
    expect(failures.length, `first failure: ${JSON.stringify(failures[0])}`).toBe(0);
    const tokens = new Set(answers.map((a) => a.body.accessToken as string));
    expect(tokens.size).toBe(1);
    const [fresh] = [...tokens] as [string];
    expect(fresh).not.toBe(old);

    // Exactly one refresh reached the provider, and it answered with the token everyone got.
    expect(refreshRequests().length - refreshesBefore).toBe(1);
    expect((provider.grants.success.refresh_token ?? 0) - grantsBefore).toBe(1);
    expect(provider.grants.error.refresh_token ?? 0).toBe(0);
    expect(proxy.answers.at(-1)).toMatchObject({ grantType: "refresh_token", status: 200, accessToken: fresh });
    expect(await resourceStatus(provider.resourceUrl, fresh)).toBe(200);

    // Stored once: one new version, lease released, valid again.
    const after = await connectionRow();
    expect(after).toMatchObject({ version: before.version + 1, lease_owner: null, status: "connected" });
    expect(after.access_expires_at).toBeGreaterThan(Date.now());
    const status = await cluster.call(processes[2]!, "GetOauthStatus", { workerId, oauthCapabilityKey: "githubAuth" });
    expect(status.body.connections[0]).toMatchObject({ status: "connected", lastError: null, lastRefreshAt: expect.any(String) });
  });
});
