/**
 * SIGKILL safety. A server process killed at the worst moments (a refresh waiting on the
 * provider, a provider answer with a rotated refresh token in flight, a build, a run, a secrets
 * write) and started again on the same store: nothing committed is lost, nothing half-written is
 * visible, and a connection either works or says plainly that it needs re-authorization.
 *
 * One process at a time, restarted on the same port (as a machine comes back at its address), so
 * the redirect URL registered at the provider stays the same.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { closedPort } from "../helpers/cli.js";
import { EXTRA_TOOLS, newMasterKey, ok, resourceStatus, scaffoldProjects, startCluster, until, type Cluster, type Projects } from "../helpers/cluster.js";
import { authorizeOverHttp, openPage } from "../helpers/http-browser.js";
import { oauthWorkerSource } from "../helpers/oauth-bench.js";
import { OUR_NTN } from "../helpers/paths.js";
import { postgresAvailable } from "../helpers/pg.js";
import { startQuirkProxy, type QuirkProxy } from "../helpers/quirk-proxy.js";
import { SEED_TOKEN_VAR } from "../helpers/seed-worker.js";
import { callAction, startServerProcess, type ServerProcess } from "../helpers/server-process.js";
import { startProvider, type TestProvider } from "../helpers/start-provider.js";
import { tempDir } from "../helpers/tmp.js";

const hasPg = await postgresAvailable();

const KEY = "githubAuth";
const REAUTHORIZE = `ntn workers oauth start ${KEY}`;
/** The lease lasts three provider timeouts: 6 s, so a dead holder's lease runs out quickly. */
const PROCESS_ARGS = ["--provider-timeout", "2s"];

/** What a user can be told about a connection after a crash: it works, or it needs re-authorization. */
type Outcome = "works" | "needs_reauthorization";

/** The provider's side of a connection: an oidc-provider behind a quirk proxy that counts. */
async function startOAuth(callbackUrl: string): Promise<{ provider: TestProvider; proxy: QuirkProxy }> {
  const proxy = await startQuirkProxy();
  const provider = await startProvider({ redirectUris: [callbackUrl], accessTokenTtl: 600, rotateRefreshToken: true });
  proxy.target = provider.tokenEndpoint;
  return { provider, proxy };
}

function workerSource(provider: TestProvider, proxy: QuirkProxy, extra = ""): string {
  return oauthWorkerSource({ authorizationEndpoint: provider.authorizationEndpoint, tokenEndpoint: proxy.tokenEndpoint, resourceUrl: provider.resourceUrl }) + EXTRA_TOOLS + extra;
}

/** StartOauth, the provider's pages, the callback: through `url`. */
async function connect(url: string, token: string, workerId: string): Promise<void> {
  const started = await callAction(url, "StartOauth", { workerId, oauthCapabilityKey: KEY }, token);
  expect(started.status, JSON.stringify(started.body)).toBe(200);
  const outcome = await authorizeOverHttp(started.body.authorizationUrl, { callbackPrefix: `${url}/workers/oauth/callback` });
  expect(outcome.callbackUrl, JSON.stringify(outcome.providerPage)).toBeTruthy();
  const page = await openPage(outcome.callbackUrl!);
  expect(page.status, page.text).toBe(200);
}

/**
 * What a user gets from a connection now: a token the resource API accepts, or a plain "needs
 * re-authorization" everywhere (token, status, env pull); never a 5xx, never a dead token as valid.
 */
async function userOutcome(url: string, token: string, workerId: string, resourceUrl: string): Promise<Outcome> {
  const answer = await callAction(url, "GetOauthToken", { workerId, oauthCapabilityKey: KEY }, token);
  expect(answer.status, JSON.stringify(answer.body)).toBeLessThan(500);
  const status = (await callAction(url, "GetOauthStatus", { workerId, oauthCapabilityKey: KEY }, token)).body.connections[0];
  const pulled = await callAction(url, "PullEnv", { workerId }, token);
  expect(pulled.status).toBe(200);
  const pulledToken = pulled.body.env.find((e: { key: string }) => e.key === SEED_TOKEN_VAR);
  if (answer.status === 200) {
    expect(await resourceStatus(resourceUrl, answer.body.accessToken), "a token handed out as valid").toBe(200);
    expect(status).toMatchObject({ status: "connected", lastError: null });
    expect(pulledToken?.value).toBe(answer.body.accessToken);
    return "works";
  }
  expect(answer.status).toBe(409);
  expect(answer.body).toMatchObject({ code: "oauth_needs_reauthorization", hint: `Run: ${REAUTHORIZE}` });
  expect(answer.body.message).toContain("invalid_grant");
  expect(status).toMatchObject({ status: "needs_reauthorization", lastError: expect.stringContaining("invalid_grant") });
  expect(pulledToken).toBeUndefined();
  expect(pulled.body.notices).toContainEqual({ key: SEED_TOKEN_VAR, message: expect.stringContaining(REAUTHORIZE) });
  return "needs_reauthorization";
}

/** Our CLI as a child process, with its output as it comes (for killing the server at a given line). */
function spawnCli(env: Record<string, string>, argv: string[], cwd: string, onOutput?: (stderr: string) => void) {
  const child = spawn(process.execPath, [OUR_NTN, ...argv], { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stdout.resume();
  child.stderr.on("data", (c: Buffer) => {
    stderr += c.toString("utf8");
    onOutput?.(stderr);
  });
  return { stderr: () => stderr, closed: new Promise<number | null>((resolve) => child.on("close", resolve)) };
}

/**
 * A CLI command whose server died under it fails (exit 5) with a plain `error:` line saying the
 * connection was lost: not a stack trace, not "this looks like a bug in ntn".
 */
function expectPlainConnectionLoss(code: number | null, stderr: string): void {
  expect(code, stderr).toBe(5);
  expect(stderr).toMatch(/^error: /m);
  expect(stderr).not.toMatch(/^\s+at .+:\d+:\d+\)?$/m);
  expect.soft(stderr, "what the CLI says when the server goes away mid-stream").not.toContain("looks like a bug in ntn");
  expect.soft(stderr, "what the CLI says when the server goes away mid-stream").toMatch(/^error: .*(connection|server).*$/im);
}

/** Sends UpsertSecrets and SIGKILLs the server `delayMs` after the request left (its answer, if any, is ignored). */
function upsertThenKill(proc: ServerProcess, token: string, body: unknown, delayMs: number): Promise<void> {
  const payload = JSON.stringify(body);
  return new Promise((resolve) => {
    const request = http.request(`${proc.url}/api/v3/workersUpsertSecrets`, {
      method: "POST",
      headers: { "content-type": "application/json", "content-length": Buffer.byteLength(payload), authorization: `Bearer ${token}` },
    });
    request.on("error", () => {});
    request.on("response", (response) => response.resume().on("error", () => {}));
    request.on("finish", () => setTimeout(() => void proc.kill("SIGKILL").then(resolve), delayMs));
    request.end(payload);
  });
}

/** The secrets of one `env set` request: existing names with new values, and new names. */
function secretsRequest(round: string, existing: string[], added: number) {
  return [
    ...existing.map((key) => ({ key, value: `new-${round}-${key}` })),
    ...Array.from({ length: added }, (_, i) => ({ key: `ADDED_${round}_${i}`, value: `added-${round}-${i}` })),
  ];
}

/** All of the request's secrets are there, or none: the earlier values and no new name. */
function allOrNone(env: { key: string; value: string }[], round: string, existing: string[], added: number): "all" | "none" {
  const values = new Map(env.map((e) => [e.key, e.value]));
  const request = secretsRequest(round, existing, added);
  const all = request.every((s) => values.get(s.key) === s.value);
  const none = existing.every((key) => values.get(key) === `old-${round}-${key}`) && request.every((s) => !s.key.startsWith("ADDED_") || !values.has(s.key));
  expect(all || none, `after the kill, ${round}: ${JSON.stringify([...values.entries()].filter(([k]) => k.startsWith("ADDED_") || k.startsWith("BATCH_")).map(([k, v]) => `${k}=${v}`))}`).toBe(true);
  return all ? "all" : "none";
}

describe.skipIf(!hasPg)("SIGKILL on PostgreSQL", () => {
  let cluster: Cluster;
  let projects: Projects;
  let provider: TestProvider;
  let proxy: QuirkProxy;
  let proc: ServerProcess;
  let port: number;
  let dir: string;
  let workerId: string;

  const call = (action: string, body: unknown = {}) => cluster.call(proc, action, body);
  const refreshAttempts = () => proxy.requests.filter((r) => r.grantType === "refresh_token").length;
  const expire = async () => {
    await cluster.sql("update oauth_connections set access_expires_at = $1 where worker_id = $2", [Date.now() - 1000, workerId]);
    await cluster.announce({ table: "oauth_connections", id: `${workerId}/${KEY}` });
  };

  /** SIGKILLs the process if it still runs, and starts it again: same schema, port and data dir. */
  async function restart(): Promise<void> {
    await proc.kill("SIGKILL");
    proc = await cluster.start({ dataDir: proc.dataDir, args: ["--port", String(port), ...PROCESS_ARGS] });
  }

  beforeAll(async () => {
    port = await closedPort();
    cluster = await startCluster(1, { args: ["--port", String(port), ...PROCESS_ARGS] });
    proc = cluster.processes[0]!;
    ({ provider, proxy } = await startOAuth(`${proc.url}/workers/oauth/callback`));
    projects = await scaffoldProjects(cluster);
    dir = projects.project("crash", workerSource(provider, proxy));
    workerId = await projects.deploy(proc.url, dir);
    const secrets = await call("UpsertSecrets", {
      workerId,
      secrets: [
        { key: "GITHUB_CLIENT_ID", value: provider.clientId },
        { key: "GITHUB_CLIENT_SECRET", value: provider.clientSecret },
      ],
    });
    expect(secrets.status, JSON.stringify(secrets.body)).toBe(200);
    await connect(proc.url, cluster.adminToken, workerId);
  }, 240_000);

  afterAll(async () => {
    if (proxy) proxy.beforeAnswer = proxy.afterAnswer = undefined;
    await cluster?.stop();
    await proxy?.stop();
    await provider?.stop();
    projects?.cleanup();
  });

  it("a: killed while a refresh waits on the provider, then restarted: the connection works, after at most two refresh attempts", async () => {
    // A working connection to start from (b may have left it needing re-authorization).
    proxy.setMode("pass");
    if ((await userOutcome(proc.url, cluster.adminToken, workerId, provider.resourceUrl)) !== "works") await connect(proc.url, cluster.adminToken, workerId);
    const refreshErrors = provider.grants.error.refresh_token ?? 0;
    // Another machine of the cluster, which a request reaches while the dead one's lease is live.
    const other = await cluster.start({ args: PROCESS_ARGS });
    proxy.setMode("delay", { grantType: "refresh_token", delayMs: 60_000 });
    await expire();
    const attempts = refreshAttempts();
    const pending = call("GetOauthToken", { workerId, oauthCapabilityKey: KEY }).catch((error: Error) => error);
    await until("the refresh to reach the token endpoint", () => refreshAttempts() === attempts + 1);
    const [held] = await cluster.sql<{ lease_owner: string | null }>("select lease_owner from oauth_connections where worker_id = $1", [workerId]);
    expect(held!.lease_owner, "the refresher holds the lease while the provider has not answered").not.toBeNull();
    await proc.kill("SIGKILL");
    expect(await pending).toBeInstanceOf(Error);
    proxy.setMode("pass");

    // A request on the other machine waits until the dead holder's lease runs out (three provider
    // timeouts), then refreshes: it gets a token, not "is being refreshed" from a refresher that is gone.
    const meanwhile = await cluster.call(other, "GetOauthToken", { workerId, oauthCapabilityKey: KEY });
    expect.soft(meanwhile.status, `a request that waited out a dead holder's lease: ${JSON.stringify(meanwhile.body)}`).toBe(200);
    await other.kill("SIGKILL");

    // The killed machine comes back: the connection works there.
    await restart();
    expect(await userOutcome(proc.url, cluster.adminToken, workerId, provider.resourceUrl)).toBe("works");
    expect(refreshAttempts() - attempts).toBeGreaterThanOrEqual(1);
    expect(refreshAttempts() - attempts).toBeLessThanOrEqual(2);
    expect((provider.grants.error.refresh_token ?? 0) - refreshErrors).toBe(0);
    const [row] = await cluster.sql<{ lease_owner: string | null; failure_count: number }>("select lease_owner, failure_count from oauth_connections where worker_id = $1", [workerId]);
    expect(row).toMatchObject({ lease_owner: null, failure_count: 0 });
  });

  it("b: killed as the provider answers with a rotated refresh token: after restart it works or says plainly that it needs re-authorization", async () => {
    const variants = [
      { name: "before the answer reaches the server", when: "before" as const, delayMs: 0 },
      { name: "as the answer is sent", when: "after" as const, delayMs: 0 },
      { name: "a moment after the answer was sent", when: "after" as const, delayMs: 30 },
    ];
    const outcomes: string[] = [];
    for (const variant of variants) {
      proxy.setMode("pass");
      if ((await userOutcome(proc.url, cluster.adminToken, workerId, provider.resourceUrl)) !== "works") await connect(proc.url, cluster.adminToken, workerId);
      await expire();
      const attempts = refreshAttempts();
      let killed: Promise<void> | undefined;
      const victim = proc;
      if (variant.when === "before") {
        proxy.beforeAnswer = async (answer) => {
          if (answer.grantType !== "refresh_token") return;
          proxy.beforeAnswer = undefined;
          expect(answer).toMatchObject({ status: 200, refreshToken: expect.any(String) });
          killed = victim.kill("SIGKILL");
          await killed;
        };
      } else {
        proxy.afterAnswer = (answer) => {
          if (answer.grantType !== "refresh_token") return;
          proxy.afterAnswer = undefined;
          setTimeout(() => (killed = victim.kill("SIGKILL")), variant.delayMs);
        };
      }
      const answered = await call("GetOauthToken", { workerId, oauthCapabilityKey: KEY }).catch((error: Error) => error);
      await until("the kill", () => killed !== undefined);
      await killed;
      proxy.beforeAnswer = undefined;
      proxy.afterAnswer = undefined;
      expect(refreshAttempts() - attempts).toBe(1);
      // An answer that made it out before the kill was committed first: its token is good.
      if (!(answered instanceof Error)) {
        expect(answered.status, JSON.stringify(answered.body)).toBe(200);
        expect(await resourceStatus(provider.resourceUrl, answered.body.accessToken)).toBe(200);
      }

      await restart();
      // A dead holder's lease is waited out first (a request that waits it out is test a's matter).
      await until(
        "the dead holder's lease to run out",
        async () => (await cluster.sql<{ free: boolean }>("select (lease_owner is null or lease_expires_at < $1) as free from oauth_connections where worker_id = $2", [Date.now(), workerId]))[0]!.free,
        15_000,
        100,
      );
      const outcome = await userOutcome(proc.url, cluster.adminToken, workerId, provider.resourceUrl);
      outcomes.push(`${variant.name}: ${outcome}${answered instanceof Error ? "" : " (the killed server had answered)"}`);
    }
    console.log(`SIGKILL around a rotated refresh token:\n  ${outcomes.join("\n  ")}`);
    // The connection is usable again for what follows.
    if ((await userOutcome(proc.url, cluster.adminToken, workerId, provider.resourceUrl)) !== "works") await connect(proc.url, cluster.adminToken, workerId);
  });

  it("c: killed mid-deploy and mid-run: the previous deployment stays live and runs, the deploy can be retried, the run is listed", async () => {
    const liveOf = async () => (await cluster.sql<{ live_deployment_id: string }>("select live_deployment_id from workers where id = $1", [workerId]))[0]!.live_deployment_id;
    const previous = await liveOf();
    const runTool = async (key: string, args: unknown = {}) => call("RunCapability", { workerId, capabilityKey: key, args });

    // ---- mid-deploy: the new version takes its time to load (so the build cannot be over before
    // the kill); the server dies right after the first [build] line.
    fs.writeFileSync(
      path.join(dir, "src", "index.ts"),
      workerSource(provider, proxy, `\nawait new Promise((resolve) => setTimeout(resolve, 3000));\nworker.tool("addedLater", { title: "Added later", description: "New in the second version", schema: j.object({}), execute: async () => "v2" });\n`),
    );
    const victim = proc;
    let killed: Promise<void> | undefined;
    const deploy = spawnCli(projects.env(proc.url), ["workers", "deploy"], dir, (output) => {
      if (!killed && output.includes("[build]")) killed = victim.kill("SIGKILL");
    });
    const code = await deploy.closed;
    await killed;
    expect(killed, `the deploy never printed a [build] line:\n${deploy.stderr()}`).toBeDefined();
    console.log(`ntn workers deploy, its server killed mid-build (exit ${code}):\n${deploy.stderr()}`);
    // The user is told the deploy failed, in plain words: the connection to the server was lost.
    expectPlainConnectionLoss(code, deploy.stderr());
    const interrupted = await cluster.sql<{ id: string; status: string }>("select id, status from deployments where worker_id = $1 and id <> $2", [workerId, previous]);
    expect(interrupted, "the killed build left its row").toEqual([{ id: expect.any(String), status: "building" }]);

    // ---- mid-run: `ntn workers exec --stream` of a tool that sleeps 5 s, recorded as running
    // after 200 ms, then the kill.
    await restart();
    const before = new Set(((await call("ListRunsForWorker", { workerId })).body.runs as { runId: string }[]).map((r) => r.runId));
    const exec = spawnCli(projects.env(proc.url), ["workers", "exec", "sleepy", "--stream", "-d", JSON.stringify({ ms: 5000 })], dir);
    let runId: string | undefined;
    await until("the run to be listed as running", async () => {
      const runs = (await call("ListRunsForWorker", { workerId })).body.runs as { runId: string; name: string; status: string }[];
      runId = runs.find((r) => !before.has(r.runId) && r.name === "sleepy" && r.status === "running")?.runId;
      return runId !== undefined;
    });
    await proc.kill("SIGKILL");
    const execCode = await exec.closed;
    console.log(`ntn workers exec --stream, its server killed mid-run (exit ${execCode}):\n${exec.stderr()}`);
    expectPlainConnectionLoss(execCode, exec.stderr());

    await restart();
    // The previous deployment is live and runs; the killed build never became live.
    expect(await liveOf()).toBe(previous);
    const ran = await runTool("whereAmI");
    expect(ran.status, JSON.stringify(ran.body)).toBe(200);
    expect((await runTool("addedLater")).body).toMatchObject({ code: "capability_not_found" });
    // The interrupted run is listed: recorded as running, it stays so until the stale-run cleanup.
    const runs = (await call("ListRunsForWorker", { workerId })).body.runs as { runId: string; status: string; exitCode: number | null }[];
    const listed = runs.find((r) => r.runId === runId);
    expect(listed, "the interrupted run").toBeDefined();
    expect(["running", "failed"]).toContain(listed!.status);

    // The deploy can be retried: it builds and goes live.
    fs.writeFileSync(
      path.join(dir, "src", "index.ts"),
      workerSource(provider, proxy, `\nworker.tool("addedLater", { title: "Added later", description: "New in the second version", schema: j.object({}), execute: async () => "v2" });\n`),
    );
    ok(await projects.cli(proc.url, ["workers", "deploy"], dir));
    const next = await liveOf();
    expect(next).not.toBe(previous);
    expect((await runTool("addedLater")).body).toMatchObject({ result: "v2" });

    // A server that starts when the interrupted build and run are older than 30 minutes records
    // them as failed: no deployment stays 'building', no run 'running', once a server restarts.
    const halfHourAgo = 31 * 60 * 1000;
    await cluster.sql("update deployments set created_at = created_at - $1 where id = $2", [halfHourAgo, interrupted[0]!.id]);
    await cluster.sql("update runs set started_at = started_at - $1 where id = $2", [halfHourAgo, runId!]);
    await restart();
    const [build] = await cluster.sql<{ status: string; error: string }>("select status, error from deployments where id = $1", [interrupted[0]!.id]);
    expect(build).toEqual({ status: "failed", error: "The build was interrupted (the server stopped)." });
    const after = ((await call("ListRunsForWorker", { workerId })).body.runs as { runId: string }[]).find((r) => r.runId === runId);
    expect(after).toMatchObject({ status: "failed", exitCode: 1, error: "The run was interrupted (the server stopped)." });
    expect(await liveOf()).toBe(next);
  });

  it("d: killed during `env set`: PullEnv shows all of the request's secrets or none", async () => {
    const existing = Array.from({ length: 40 }, (_, i) => `BATCH_${i}`);
    const seen: string[] = [];
    for (const [round, delayMs] of [0, 25, 45, 65, 150].entries()) {
      const name = `r${round}`;
      const baseline = await call("UpsertSecrets", { workerId, secrets: existing.map((key) => ({ key, value: `old-${name}-${key}` })) });
      expect(baseline.status, JSON.stringify(baseline.body)).toBe(200);
      await upsertThenKill(proc, cluster.adminToken, { workerId, secrets: secretsRequest(name, existing, 40) }, delayMs);
      await restart();
      const pulled = await call("PullEnv", { workerId });
      expect(pulled.status, JSON.stringify(pulled.body)).toBe(200);
      seen.push(`${delayMs} ms: ${allOrNone(pulled.body.env, name, existing, 40)}`);
    }
    console.log(`SIGKILL after an env set request was sent (delay: outcome): ${seen.join(", ")}`);
    // And the worker still loads and runs with whatever is stored.
    expect((await call("RunCapability", { workerId, capabilityKey: "whereAmI", args: {} })).status).toBe(200);
  });
});

describe("SIGKILL on SQLite (one process, WAL, synchronous=FULL)", () => {
  let data: { dir: string; cleanup(): void };
  const masterKey = newMasterKey();
  let provider: TestProvider;
  let proxy: QuirkProxy;
  let projects: Projects;
  let proc: ServerProcess;
  let token: string;
  let workerId: string;
  let port: number;

  const start = async () => {
    proc = await startServerProcess({
      dataDir: path.join(data.dir, "server"),
      masterKey,
      args: ["--port", String(port), ...PROCESS_ARGS],
      env: { TMPDIR: path.join(data.dir, "tmp") },
    });
  };
  const restart = async () => {
    await proc.kill("SIGKILL");
    await start();
  };
  /** Edits the database while no server runs. */
  const withDb = (edit: (db: Database.Database) => void) => {
    const db = new Database(path.join(data.dir, "server", "workyard.db"));
    try {
      edit(db);
    } finally {
      db.close();
    }
  };
  const call = (action: string, body: unknown = {}) => callAction(proc.url, action, body, token);

  beforeAll(async () => {
    port = await closedPort();
    data = tempDir("wy-crash-sqlite-");
    fs.mkdirSync(path.join(data.dir, "server"));
    fs.mkdirSync(path.join(data.dir, "tmp"));
    await start();
    token = fs.readFileSync(path.join(proc.dataDir, "admin-token"), "utf8").trim();
    const who = await call("WhoAmI");
    ({ provider, proxy } = await startOAuth(`${proc.url}/workers/oauth/callback`));
    projects = await scaffoldProjects({ adminToken: token, workspaceId: who.body.workspaceId });
    workerId = await projects.deploy(proc.url, projects.project("crash-sqlite", workerSource(provider, proxy)));
  }, 240_000);

  afterAll(async () => {
    await proc?.kill("SIGKILL");
    await proxy?.stop();
    await provider?.stop();
    projects?.cleanup();
    data?.cleanup();
  });

  it("loses at most the run records of its last commit interval (100 ms) when killed after answering", async () => {
    const run = async () => {
      const ran = await call("RunCapability", { workerId, capabilityKey: "whereAmI", args: {} });
      expect(ran.status, JSON.stringify(ran.body)).toBe(200);
    };
    const recorded = async () => {
      const listed = await call("ListRunsForWorker", { workerId });
      return (listed.body.runs as { name: string }[]).filter((r) => r.name === "whereAmI").length;
    };
    const before = await recorded();
    // Ten runs answered, then more than an interval of quiet: their records are committed...
    for (let i = 0; i < 10; i++) await run();
    await new Promise((r) => setTimeout(r, 400));
    // ...and one more answered just before the kill, whose record may or may not be.
    await run();
    await restart();
    const after = (await recorded()) - before;
    expect(after).toBeGreaterThanOrEqual(10);
    expect(after).toBeLessThanOrEqual(11);
  });

  it("loses no committed secret, connection or rotated refresh token, and keeps an interrupted env set all or nothing", async () => {
    // Secrets: answered 200, then killed at once.
    const set = await call("UpsertSecrets", {
      workerId,
      secrets: [
        { key: "GITHUB_CLIENT_ID", value: provider.clientId },
        { key: "GITHUB_CLIENT_SECRET", value: provider.clientSecret },
        { key: "CLUSTER_SECRET", value: "sqlite-secret-canary-5e2f" },
      ],
    });
    expect(set.status, JSON.stringify(set.body)).toBe(200);
    await restart();
    expect((await call("PullEnv", { workerId })).body.env).toEqual(
      expect.arrayContaining([
        { key: "GITHUB_CLIENT_ID", value: provider.clientId },
        { key: "CLUSTER_SECRET", value: "sqlite-secret-canary-5e2f" },
      ]),
    );

    // A connection: the callback page said "Connected", then killed at once.
    await connect(proc.url, token, workerId);
    const issued = proxy.answers.at(-1)!;
    expect(issued).toMatchObject({ grantType: "authorization_code", status: 200 });
    await restart();
    const stored = await call("GetOauthToken", { workerId, oauthCapabilityKey: KEY });
    expect(stored.status, JSON.stringify(stored.body)).toBe(200);
    expect(stored.body.accessToken).toBe(issued.accessToken);

    // A refresh that rotated the refresh token, answered, then killed at once: after the restart
    // the next refresh sends the rotated refresh token (the old one is spent at the provider).
    await proc.kill("SIGKILL");
    withDb((db) => db.prepare("update oauth_connections set access_expires_at = ? where worker_id = ?").run(Date.now() - 1000, workerId));
    await start();
    const refreshed = await call("GetOauthToken", { workerId, oauthCapabilityKey: KEY });
    expect(refreshed.status, JSON.stringify(refreshed.body)).toBe(200);
    const rotated = proxy.answers.at(-1)!;
    expect(rotated).toMatchObject({ grantType: "refresh_token", status: 200, accessToken: refreshed.body.accessToken, refreshToken: expect.any(String) });
    await proc.kill("SIGKILL");
    withDb((db) => db.prepare("update oauth_connections set access_expires_at = ? where worker_id = ?").run(Date.now() - 1000, workerId));
    await start();
    expect(await userOutcome(proc.url, token, workerId, provider.resourceUrl)).toBe("works");
    expect(proxy.requests.at(-1)).toMatchObject({ grantType: "refresh_token", refreshToken: rotated.refreshToken });
    expect(provider.grants.error.refresh_token ?? 0).toBe(0);

    // An env set killed right after it was sent: all or none.
    const existing = Array.from({ length: 20 }, (_, i) => `BATCH_${i}`);
    for (const [round, delayMs] of [0, 5].entries()) {
      const name = `s${round}`;
      expect((await call("UpsertSecrets", { workerId, secrets: existing.map((key) => ({ key, value: `old-${name}-${key}` })) })).status).toBe(200);
      await upsertThenKill(proc, token, { workerId, secrets: secretsRequest(name, existing, 20) }, delayMs);
      await start();
      allOrNone((await call("PullEnv", { workerId })).body.env, name, existing, 20);
    }
  });
});
