/**
 * Issue 13, fix 6: overload and a busy database are not bugs. 300 `ntn workers oauth token` at
 * once over three processes on one PostgreSQL (on a 2-core machine, everything on it): every
 * call succeeds. A connection that does not come in time or a lock not taken answers 503 with
 * Retry-After, and our CLI retries idempotent calls after it.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { scaffoldProjects, startCluster, type Cluster, type Projects } from "../helpers/cluster.js";
import { authorizeOverHttp, openPage } from "../helpers/http-browser.js";
import { oauthWorkerSource } from "../helpers/oauth-bench.js";
import { postgresAvailable } from "../helpers/pg.js";
import { ntn } from "../helpers/run-ntn.js";
import { startProvider, type TestProvider } from "../helpers/start-provider.js";

const CALLS = 300;

describe.skipIf(!(await postgresAvailable()))("a burst of CLI calls on three processes", () => {
  let cluster: Cluster;
  let projects: Projects;
  let provider: TestProvider;
  let workerId: string;

  beforeAll(async () => {
    cluster = await startCluster(3);
    const A = cluster.processes[0]!;
    provider = await startProvider({ redirectUris: [`${A.url}/workers/oauth/callback`], accessTokenTtl: 600 });
    projects = await scaffoldProjects(cluster);
    const dir = projects.project("burst", oauthWorkerSource({ authorizationEndpoint: provider.authorizationEndpoint, tokenEndpoint: provider.tokenEndpoint, resourceUrl: provider.resourceUrl }));
    workerId = await projects.deploy(A.url, dir);
    const secrets = await cluster.call(A, "UpsertSecrets", {
      workerId,
      secrets: [
        { key: "GITHUB_CLIENT_ID", value: provider.clientId },
        { key: "GITHUB_CLIENT_SECRET", value: provider.clientSecret },
      ],
    });
    expect(secrets.status).toBe(200);
    const started = await cluster.call(A, "StartOauth", { workerId, oauthCapabilityKey: "githubAuth" });
    const outcome = await authorizeOverHttp(started.body.authorizationUrl, { callbackPrefix: `${A.url}/workers/oauth/callback` });
    expect((await openPage(outcome.callbackUrl!)).status).toBe(200);
  }, 240_000);

  afterAll(async () => {
    await cluster?.stop();
    await provider?.stop();
    projects?.cleanup();
  });

  it(`${CALLS} concurrent \`ntn workers oauth token\` all succeed`, async () => {
    // In this process through the CLI's run(): 300 requests at once with the CLI's client and its
    // retries, without 300 Node starts that would starve the servers and the test runner alike.
    const results = await Promise.all(
      Array.from({ length: CALLS }, (_, i) => {
        const proc = cluster.processes[i % cluster.processes.length]!;
        return ntn(["workers", "oauth", "token", "githubAuth", "--worker-id", workerId, "--plain"], { cwd: projects.root, env: projects.env(proc.url) });
      }),
    );
    const failed = results.filter((r) => r.code !== 0);
    expect(failed.length, `first failure: ${failed[0]?.stderr}`).toBe(0);
    expect(results.some((r) => /bug in Workyard/.test(r.stderr))).toBe(false);
    expect(new Set(results.map((r) => r.stdout.trim())).size).toBe(1);
  }, 300_000);
});
