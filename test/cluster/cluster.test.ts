/**
 * Any process serves any request: three `ntn server` processes on one PostgreSQL schema, like three
 * machines behind a load balancer. What one process stores (a deployment, secrets, an OAuth flow
 * and its tokens, a revocation) every other one acts on at once.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EXTRA_TOOLS, resourceStatus, scaffoldProjects, startCluster, type Cluster, type Projects, ok } from "../helpers/cluster.js";
import { authorizeOverHttp, openPage } from "../helpers/http-browser.js";
import { oauthWorkerSource } from "../helpers/oauth-bench.js";
import { postgresAvailable } from "../helpers/pg.js";
import { SEED_TOKEN_VAR } from "../helpers/seed-worker.js";
import type { ServerProcess } from "../helpers/server-process.js";
import { startProvider, type TestProvider } from "../helpers/start-provider.js";

const hasPg = await postgresAvailable();

const SECRET_V1 = "cluster-secret-v1-canary-7c1e";
const SECRET_V2 = "cluster-secret-v2-canary-90ab";
const CLIENT_SECRET = "cluster-client-secret-canary-33d4";

let cluster: Cluster;
let projects: Projects;
let provider: TestProvider;
let A: ServerProcess;
let B: ServerProcess;
let C: ServerProcess;
let dir: string;
let workerId: string;
/** The same source as a second worker, whose deployment only the first test runs. */
let untouchedId: string;

const callbackOf = (proc: ServerProcess) => `${proc.url}/workers/oauth/callback`;

/** RunCapability through one process: the tool's result (fails the test on anything but 200). */
async function run(proc: ServerProcess, key: string, args: unknown = {}, worker = workerId): Promise<any> {
  const answer = await cluster.call(proc, "RunCapability", { workerId: worker, capabilityKey: key, args });
  expect(answer.status, `${key} on ${proc.url}: ${JSON.stringify(answer.body)}`).toBe(200);
  expect(answer.body.runId).toEqual(expect.any(String));
  return answer.body.result;
}

describe.skipIf(!hasPg)("three processes on one PostgreSQL", () => {
  beforeAll(async () => {
    // Each process installs the tree itself: no fixture tree in place.
    cluster = await startCluster(3, { installedFixture: false });
    [A, B, C] = cluster.processes as [ServerProcess, ServerProcess, ServerProcess];
    provider = await startProvider({ redirectUris: [callbackOf(A), callbackOf(B), callbackOf(C)], accessTokenTtl: 600, clientSecret: CLIENT_SECRET });
    projects = await scaffoldProjects(cluster);
    dir = projects.project(
      "cluster-worker",
      oauthWorkerSource({ authorizationEndpoint: provider.authorizationEndpoint, tokenEndpoint: provider.tokenEndpoint, resourceUrl: provider.resourceUrl }) +
        EXTRA_TOOLS,
    );
    // Deployed through A only: B and C never see the upload or the build.
    workerId = await projects.deploy(A.url, dir);
    untouchedId = await projects.deploy(A.url, projects.project("cluster-untouched", fs.readFileSync(path.join(dir, "src", "index.ts"), "utf8")));
    const client = await cluster.call(A, "UpsertSecrets", {
      workerId,
      secrets: [
        { key: "GITHUB_CLIENT_ID", value: provider.clientId },
        { key: "GITHUB_CLIENT_SECRET", value: CLIENT_SECRET },
      ],
    });
    expect(client.status, JSON.stringify(client.body)).toBe(200);
  }, 240_000);

  /** The OAuth flow started through A and completed on B, once, by whichever test needs it first. */
  let connection: Promise<{ started: { body: any }; outcome: { callbackUrl?: string | undefined; providerPage?: unknown }; page: { status: number; text: string; html: string } }> | undefined;
  const connected = () =>
    (connection ??= (async () => {
      const started = await cluster.call(A, "StartOauth", { workerId, oauthCapabilityKey: "githubAuth" });
      expect(started.status, JSON.stringify(started.body)).toBe(200);
      const outcome = await authorizeOverHttp(started.body.authorizationUrl, { callbackPrefix: callbackOf(A) });
      expect(outcome.callbackUrl, JSON.stringify(outcome.providerPage)).toBeTruthy();
      // The load balancer sends the browser's request to B.
      const onB = new URL(outcome.callbackUrl!);
      onB.host = new URL(B.url).host;
      const page = await openPage(onB.href);
      return { started, outcome, page };
    })());

  afterAll(async () => {
    await cluster?.stop();
    await provider?.stop();
    projects?.cleanup();
  });

  it("runs a worker deployed through A on B and C: each materialises it from the store and installs its dependencies itself", async () => {
    const workerId = untouchedId;
    const [worker] = await cluster.sql<{ live_deployment_id: string }>("select live_deployment_id from workers where id = $1", [workerId]);
    const deploymentId = worker!.live_deployment_id;
    expect(deploymentId).toEqual(expect.any(String));
    const [deployment] = await cluster.sql<{ lockfile_hash: string; status: string }>("select lockfile_hash, status from deployments where id = $1", [deploymentId]);
    expect(deployment!.status).toBe("ready");
    const lockfileHash = deployment!.lockfile_hash;
    for (const proc of [B, C]) {
      const bundleDir = path.join(proc.dataDir, "deployments", deploymentId);
      expect(fs.existsSync(bundleDir), `${proc.url} had the deployment before its first run`).toBe(false);
      expect(await run(proc, "whereAmI", {}, workerId)).toMatchObject({ atLoad: null, now: null });
      // The bundle came from the store; node_modules is a tree this process installed from the
      // stored archive's lockfile, under its own data dir.
      expect(fs.existsSync(path.join(bundleDir, "index.mjs"))).toBe(true);
      const nodeModules = fs.realpathSync(path.join(bundleDir, "node_modules"));
      expect(nodeModules).toBe(fs.realpathSync(path.join(proc.dataDir, "deps", lockfileHash, "node_modules")));
      expect(fs.existsSync(path.join(proc.dataDir, "deps", lockfileHash, ".complete"))).toBe(true);
      expect(fs.existsSync(path.join(nodeModules, "@notionhq", "workers", "package.json"))).toBe(true);
    }
    // And the capabilities listed through any process are the deployment's.
    const listed = await cluster.call(C, "ListCapabilities", { workerId });
    expect(listed.status).toBe(200);
    expect(listed.body.capabilities.map((c: { key: string }) => c.key).sort()).toEqual(["getGitHubRepos", "githubAuth", "sleepy", "tokenTwice", "whereAmI"]);
  });

  it("reads secrets set through B through C at once, and a warm process of A does not run with stale ones", async () => {
    // A has a warm process of the worker, loaded without the secret.
    const before = await run(A, "whereAmI");
    expect(before).toMatchObject({ atLoad: null, now: null });

    const set = ok(await projects.cli(B.url, ["workers", "env", "set", `CLUSTER_SECRET=${SECRET_V1}`], dir));
    expect(set.stdout + set.stderr).not.toContain(SECRET_V1);

    const pulled = await cluster.call(C, "PullEnv", { workerId });
    expect(pulled.status, JSON.stringify(pulled.body)).toBe(200);
    expect(pulled.body.env).toEqual(
      expect.arrayContaining([
        { key: "CLUSTER_SECRET", value: SECRET_V1 },
        { key: "GITHUB_CLIENT_ID", value: provider.clientId },
        { key: "GITHUB_CLIENT_SECRET", value: CLIENT_SECRET },
      ]),
    );
    // Module code read the secret at load: A replaced its warm process instead of reusing it.
    const after = await run(A, "whereAmI");
    expect(after).toMatchObject({ atLoad: SECRET_V1, now: SECRET_V1 });
    expect(after.pid).not.toBe(before.pid);

    // Once more, the other way round: set through C, seen by B's and A's runs.
    const again = await cluster.call(C, "UpsertSecrets", { workerId, secrets: [{ key: "CLUSTER_SECRET", value: SECRET_V2 }] });
    expect(again.status, JSON.stringify(again.body)).toBe(200);
    for (const proc of [A, B]) expect(await run(proc, "whereAmI")).toMatchObject({ atLoad: SECRET_V2, now: SECRET_V2 });
    const listed = await cluster.call(A, "ListSecrets", { workerId });
    expect(listed.body.secrets.map((s: { key: string }) => s.key)).toEqual(["CLUSTER_SECRET", "GITHUB_CLIENT_ID", "GITHUB_CLIENT_SECRET"]);
  });

  it("completes on B an OAuth flow started through A, and C then hands out the token (once: the state does not work twice)", async () => {
    const { started, outcome, page } = await connected();
    expect(started.body.redirectUrl).toBe(callbackOf(A));
    expect(page.status, page.text).toBe(200);
    expect(page.text).toContain("Connected");
    expect(page.html).not.toContain(CLIENT_SECRET);

    // A, which started the flow, sees it finished (what `oauth start` waits on).
    const flow = await cluster.call(A, "GetOauthFlow", { workerId, state: started.body.state });
    expect(flow.body).toEqual({ status: "connected" });

    const token = await cluster.call(C, "GetOauthToken", { workerId, oauthCapabilityKey: "githubAuth" });
    expect(token.status, JSON.stringify(token.body)).toBe(200);
    expect(await resourceStatus(provider.resourceUrl, token.body.accessToken)).toBe(200);
    const status = await cluster.call(B, "GetOauthStatus", { workerId, oauthCapabilityKey: "githubAuth" });
    expect(status.body.connections[0]).toMatchObject({ status: "connected", hasRefreshToken: true, lastError: null });
    // Every process hands out the same token, and runs anywhere use it.
    const pulled = await cluster.call(A, "PullEnv", { workerId });
    expect(pulled.body.env).toContainEqual(expect.objectContaining({ key: SEED_TOKEN_VAR, value: token.body.accessToken }));
    expect(await run(C, "getGitHubRepos")).toEqual([expect.objectContaining({ name: "repo-one" }), expect.objectContaining({ name: "repo-two" })]);
    expect(await run(A, "getGitHubRepos")).toHaveLength(2);

    // The same redirect replayed on C: the state was used up on B.
    const onC = new URL(outcome.callbackUrl!);
    onC.host = new URL(C.url).host;
    const replay = await openPage(onC.href);
    expect(replay.status).toBeGreaterThanOrEqual(400);
    expect(replay.status).toBeLessThan(500);
    expect(replay.text).toContain("unknown, expired or already used");
    expect(provider.grants.success.authorization_code).toBe(1);
  });

  it("refuses through C, within 1 s, an API token revoked through A (at once on A)", async () => {
    expect((await connected()).page.status).toBe(200);
    const created = await cluster.call(A, "CreateToken", { name: "ci" });
    expect(created.status, JSON.stringify(created.body)).toBe(200);
    const { token, id } = created.body as { token: string; id: string };
    for (const proc of [B, C]) expect((await cluster.call(proc, "WhoAmI", {}, token)).status).toBe(200);
    expect((await cluster.call(C, "GetOauthToken", { workerId, oauthCapabilityKey: "githubAuth" }, token)).status).toBe(200);

    const revoked = await cluster.call(A, "RevokeToken", { tokenId: id });
    expect(revoked.status, JSON.stringify(revoked.body)).toBe(200);
    expect(revoked.body.token.revokedAt).toEqual(expect.any(String));

    // A, which revoked it, at once; B and C, which kept it in memory, once they hear of it
    // (LISTEN/NOTIFY: milliseconds; issue 14 allows 1 s).
    const revokedAt = Date.now();
    for (const proc of [A, C, B]) {
      let who = await cluster.call(proc, "WhoAmI", {}, token);
      while (proc !== A && who.status === 200 && Date.now() - revokedAt < 1000) {
        await new Promise((r) => setTimeout(r, 20));
        who = await cluster.call(proc, "WhoAmI", {}, token);
      }
      expect(who.status).toBe(401);
      expect(who.body).toMatchObject({ code: "unauthorized", message: "This API token was revoked." });
    }
    const refused = await cluster.call(C, "GetOauthToken", { workerId, oauthCapabilityKey: "githubAuth" }, token);
    expect(refused.status).toBe(401);
    expect(JSON.stringify(refused.body)).not.toContain("accessToken");
    // The admin token still works everywhere.
    expect((await cluster.call(C, "WhoAmI")).status).toBe(200);
  });
});
