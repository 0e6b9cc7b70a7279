/**
 * Failures on refresh and refresh under load: invalid_grant needs re-authorization (and every
 * surface says how), invalid_client is configuration, transient failures keep the tokens, and 50
 * concurrent callers cause one refresh at the provider.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { testClock } from "../helpers/clock.js";
import { expectNoCanary, failed, ok, oauthWorkerSource, startBench, type DeployedWorker, type OAuthBench } from "../helpers/oauth-bench.js";
import { startQuirkProxy, type QuirkMode, type QuirkProxy } from "../helpers/quirk-proxy.js";
import { SEED_TOKEN_VAR } from "../helpers/seed-worker.js";
import { startProvider, type TestProvider } from "../helpers/start-provider.js";

const TTL_S = 3;
const WRONG_SECRET = "refresh-wrong-secret-canary-51d0";
const REAUTHORIZE = "ntn workers oauth start githubAuth";

let bench: OAuthBench;
let provider: TestProvider;
let proxy: QuirkProxy;
let worker: DeployedWorker;

const refreshes = (p: TestProvider) => p.grants.success.refresh_token ?? 0;
const refreshErrors = (p: TestProvider) => p.grants.error.refresh_token ?? 0;

/** The server's clock: Workyard's view of expiry moves on without a wait; the provider keeps real time. */
const clock = testClock();

/** Moves the server's clock past this expiry. */
function untilExpired(expiresAt: string): void {
  clock.advance(Math.max(0, Date.parse(expiresAt) - clock.now() + 1000));
}

/** Moves the server's clock into its refresh margin (half of a short lifetime) for this expiry. */
function untilRefreshDue(expiresAt: string): void {
  clock.advance(Math.max(0, Date.parse(expiresAt) - (TTL_S * 1000) / 2 - clock.now() + 300));
}

/** A fresh connection (of the file's worker, unless another is named): over HTTP, the refresh token it got, its status. */
async function connectFresh(target: DeployedWorker = worker) {
  const { page } = await bench.connect(target.workerId);
  expect(page.status, page.text).toBe(200);
  return { refreshToken: proxy.lastIssuedRefreshToken()!, status: await bench.status(target.workerId) };
}

/** The seed's worker, its token endpoint the quirk proxy, with the provider's client credentials. */
const deployWorker = (name: string) =>
  bench.deploy(
    name,
    oauthWorkerSource({ authorizationEndpoint: provider.authorizationEndpoint, tokenEndpoint: proxy.tokenEndpoint, resourceUrl: provider.resourceUrl }),
    { GITHUB_CLIENT_ID: provider.clientId, GITHUB_CLIENT_SECRET: provider.clientSecret },
  );

beforeAll(async () => {
  // A provider timeout of 2 s (the default is 10 s): the timeout cases wait it out for real.
  bench = await startBench({ now: clock.now, providerTimeout: "2s" });
  proxy = await startQuirkProxy();
  provider = await startProvider({ redirectUris: [`${bench.server.url}/workers/oauth/callback`], accessTokenTtl: TTL_S, clientSecret: "refresh-secret-canary-0b7a" });
  proxy.target = provider.tokenEndpoint;
  worker = await deployWorker("refresh");
}, 240_000);

afterAll(async () => {
  await bench?.stop();
  await proxy?.stop();
  await provider?.stop();
});

beforeEach(() => {
  proxy.setMode("pass");
});

describe("invalid_grant on refresh", () => {
  it("marks the connection needs_reauthorization at once, and token, env pull, exec and status all say to run oauth start", async () => {
    const { refreshToken, status } = await connectFresh();
    // A pull while all is well leaves the token of the time in .env.
    fs.rmSync(path.join(worker.dir, ".env"), { force: true });
    ok(await bench.cli(["workers", "env", "pull"], { cwd: worker.dir }));
    const earlier = new RegExp(`^${SEED_TOKEN_VAR}=(.+)$`, "m").exec(fs.readFileSync(path.join(worker.dir, ".env"), "utf8"))?.[1];
    expect(earlier).toBeTruthy();
    // The provider revokes the refresh token (a user removed the app, say), then the access token expires.
    await (await provider.provider.RefreshToken.find(refreshToken))!.destroy();
    untilExpired(status.expiresAt);

    const errors = refreshErrors(provider);
    const answer = await bench.token(worker.workerId);
    expect(answer.status).toBe(409);
    expect(answer.body).toMatchObject({ code: "oauth_needs_reauthorization", hint: `Run: ${REAUTHORIZE}` });
    expect(answer.body.message).toMatch(/^Connection "githubAuth" needs re-authorization: The provider refused the grant \(invalid_grant/);
    expect(refreshErrors(provider)).toBe(errors + 1);
    expect(await bench.status(worker.workerId)).toMatchObject({
      status: "needs_reauthorization",
      hasRefreshToken: true,
      lastError: expect.stringContaining("invalid_grant"),
      nextRefreshAt: null,
    });
    const received = proxy.received;

    // oauth token
    const token = failed(await bench.cli(["workers", "oauth", "token", "githubAuth"], { cwd: worker.dir }));
    expect(token.stdout).toBe("");
    expect(token.stderr).toMatch(/^error: Connection "githubAuth" needs re-authorization: The provider refused the grant \(invalid_grant/);
    expect(token.stderr).toContain(`  hint: Run: ${REAUTHORIZE}\n`);

    // env pull: a notice, exit 0, the secrets written and no stale token, in a new file...
    const pull = ok(await bench.cli(["workers", "env", "pull", "--file", "fresh.env"], { cwd: worker.dir }));
    expect(pull.stderr).toMatch(/warning: Connection "githubAuth" needs re-authorization: .*invalid_grant/);
    expect(pull.stderr).toContain(REAUTHORIZE);
    const dotenv = fs.readFileSync(path.join(worker.dir, "fresh.env"), "utf8");
    expect(dotenv).toContain(`GITHUB_CLIENT_ID=${provider.clientId}\n`);
    expect(dotenv).not.toContain(SEED_TOKEN_VAR);
    const pulled = await bench.server.call("PullEnv", { workerId: worker.workerId });
    expect(pulled.body.env.map((e: { key: string }) => e.key)).not.toContain(SEED_TOKEN_VAR);
    expect(pulled.body.notices).toEqual([{ key: SEED_TOKEN_VAR, message: expect.stringContaining(REAUTHORIZE) }]);
    // ...and in the .env that held the earlier token: the pull does not leave the dead token there.
    const merged = ok(await bench.cli(["workers", "env", "pull", "--yes"], { cwd: worker.dir }));
    expect(merged.stderr).toContain(REAUTHORIZE);
    const after = fs.readFileSync(path.join(worker.dir, ".env"), "utf8");
    expect(after).toContain(`GITHUB_CLIENT_ID=${provider.clientId}\n`);
    // (soft: the rest of the story still runs when this fails)
    expect.soft(after, "the .env after a pull that said the connection needs re-authorization").not.toContain(earlier!);

    // exec of the tool on the server
    const exec = failed(await bench.cli(["workers", "exec", "getGitHubRepos"], { cwd: worker.dir }));
    expect(exec.stdout).toBe("");
    expect(exec.stderr).toContain("needs re-authorization");
    expect(exec.stderr).toContain(REAUTHORIZE);

    // oauth status: the table, the hint, and --json
    const table = ok(await bench.cli(["workers", "oauth", "status"], { cwd: worker.dir }));
    expect(table.stdout).toMatch(/^githubAuth +needs re-authorization +.*invalid_grant/m);
    expect(table.stderr).toContain(`hint: run \`${REAUTHORIZE}\` to re-authorize githubAuth.`);
    const json = JSON.parse(ok(await bench.cli(["workers", "oauth", "status", "--json"], { cwd: worker.dir })).stdout);
    expect(json).toEqual([expect.objectContaining({ key: "githubAuth", status: "needs_reauthorization", lastError: expect.stringContaining("invalid_grant") })]);

    // None of this went back to the provider: the refusal was final.
    expect(proxy.received).toBe(received);
    expect(refreshErrors(provider)).toBe(errors + 1);

    // And doing what they all say fixes it.
    const start = ok(await bench.cli(["workers", "oauth", "start", "githubAuth"], { cwd: worker.dir }));
    expect(start.stderr).toContain("✔ Connected githubAuth");
    expect(await bench.status(worker.workerId)).toMatchObject({ status: "connected", lastError: null });
    const fresh = await bench.token(worker.workerId);
    expect(await provider.resourceStatus(fresh.body.accessToken)).toBe(200);
  });
});

describe("invalid_client on refresh", () => {
  it("is a configuration error naming GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET, and keeps the tokens", async () => {
    const { refreshToken, status } = await connectFresh();
    await bench.setSecrets(worker.workerId, { GITHUB_CLIENT_SECRET: WRONG_SECRET });
    const before = proxy.requests.length;
    try {
      untilExpired(status.expiresAt);
      const answer = await bench.token(worker.workerId);
      expect(answer.status).toBe(409);
      expect(answer.body).toMatchObject({
        code: "oauth_not_configured",
        message: 'Refreshing "githubAuth" failed: The provider rejected the client credentials (invalid_client: client authentication failed).',
        hint: "Check GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET: ntn workers env set GITHUB_CLIENT_ID=... GITHUB_CLIENT_SECRET=...",
      });
      const cli = failed(await bench.cli(["workers", "oauth", "token", "githubAuth"], { cwd: worker.dir }));
      expect(cli.stderr).toContain("error: Refreshing \"githubAuth\" failed: The provider rejected the client credentials");
      expect(cli.stderr).toContain("  hint: Check GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET");
      // Not a reason to throw the tokens away.
      expect(await bench.status(worker.workerId)).toMatchObject({
        status: "connected",
        hasRefreshToken: true,
        lastError: expect.stringContaining("rejected the client credentials"),
      });
      expectNoCanary({ "error body": JSON.stringify(answer.body), stderr: cli.stderr, "server log": bench.server.logs() }, { "the wrong secret": WRONG_SECRET });
    } finally {
      await bench.setSecrets(worker.workerId, { GITHUB_CLIENT_SECRET: provider.clientSecret });
    }
    const fixed = await bench.token(worker.workerId);
    expect(fixed.status, JSON.stringify(fixed.body)).toBe(200);
    expect(await provider.resourceStatus(fixed.body.accessToken)).toBe(200);
    const sent = proxy.requests.slice(before).filter((r) => r.grantType === "refresh_token");
    expect(sent.length).toBeGreaterThanOrEqual(2);
    for (const request of sent) expect(request.refreshToken).toBe(refreshToken);
    expect(await bench.status(worker.workerId)).toMatchObject({ status: "connected", lastError: null });
  });
});

describe("transient failures on refresh keep the stored refresh token", () => {
  const cases: [string, QuirkMode, RegExp][] = [
    ["a 500 HTML page", "html-500", /HTTP 500/],
    ["a 429 with Retry-After", "rate-limit", /HTTP 429/],
    ["a timeout (past the server's provider timeout, 2 s here)", "delay", /Could not get an HTTP answer from the provider/],
    ["a reset connection", "reset", /Could not get an HTTP answer from the provider/],
    ["a 200 without access_token", "no-access-token", /without a usable access token/],
    ["a 200 with invalid JSON", "invalid-json", /unexpected answer|not JSON/],
  ];

  /** As if the backoff after the previous failure had passed. */
  const backoffPassed = (workerId: string) =>
    bench.server.server.store.db.updateTable("oauth_connections").set({ next_refresh_at: clock.now() - 1 }).where("worker_id", "=", workerId).execute();

  /** The connection's access token expired on the server's clock and no backoff pending: the next token request refreshes. */
  async function refreshDueNow(workerId: string): Promise<void> {
    untilExpired((await bench.status(workerId)).expiresAt);
    await backoffPassed(workerId);
  }

  /*
   * The failing cases' worker, deployed and connected once by whichever case runs first. No case
   * reaches the provider, so its tokens stay those of this connection: each case finds the refresh
   * token it was given. (The other tests of this file connect the file's worker again and again,
   * and the pass-through test refreshes its own connection there.)
   */
  let failingConnection: Promise<{ target: DeployedWorker; kept: string }> | undefined;
  const failing = () =>
    (failingConnection ??= (async () => {
      const target = await deployWorker("transient");
      const { refreshToken } = await connectFresh(target);
      return { target, kept: refreshToken };
    })());

  it.each(cases)("%s: a clear error, the tokens kept, status shows the last error", async (_label, mode, expected) => {
    const { target, kept } = await failing();
    await refreshDueNow(target.workerId);
    const forwarded = proxy.forwarded;
    const refreshed = refreshes(provider);
    const firstRequest = proxy.requests.length;
    proxy.setMode(mode);
    const answer = await bench.token(target.workerId);
    // A 4xx: the provider failed, not the server (424 Failed Dependency).
    expect(answer.status, JSON.stringify(answer.body)).toBe(424);
    expect(answer.body).toMatchObject({
      code: "oauth_provider_error",
      hint: "The stored tokens are kept and the refresh is retried; `ntn workers oauth status` shows the last error.",
    });
    expect(answer.body.message).toMatch(/^Refreshing "githubAuth" failed: /);
    expect(answer.body.message).toMatch(expected);
    const status = await bench.status(target.workerId);
    expect(status).toMatchObject({ status: "connected", hasRefreshToken: true });
    expect(status.lastError).toMatch(expected);
    expect(Date.parse(status.nextRefreshAt)).toBeGreaterThan(Date.parse(status.lastErrorAt));
    if (mode === "rate-limit") {
      // The provider's Retry-After (120 s) sets when the refresh is tried again.
      expect(Date.parse(status.nextRefreshAt) - Date.parse(status.lastErrorAt)).toBe(120_000);
      const table = ok(await bench.cli(["workers", "oauth", "status"], { cwd: target.dir }));
      expect(table.stdout).toMatch(/^githubAuth +connected +.*HTTP 429/m);
      const cli = failed(await bench.cli(["workers", "oauth", "token", "githubAuth"], { cwd: target.dir }));
      expect(cli.stderr).toMatch(/^error: Refreshing "githubAuth" failed: .*HTTP 429/m);
      expect(cli.stderr).toContain("`ntn workers oauth status` shows the last error");
    }
    // The provider saw none of it, and what the proxy got carried the refresh token the connection was given.
    expect(proxy.forwarded).toBe(forwarded);
    expect(refreshes(provider)).toBe(refreshed);
    const sent = proxy.requests.slice(firstRequest);
    expect(sent.length).toBeGreaterThanOrEqual(1);
    for (const request of sent) expect(request).toMatchObject({ grantType: "refresh_token", refreshToken: kept, forwarded: false });
    // Until the backoff passes, another request leaves the provider alone and says when it retries.
    const seen = proxy.requests.length;
    const again = await bench.token(target.workerId);
    expect(again.status).toBe(424);
    expect(again.body.hint).toMatch(/the next attempt is at \d{4}-/);
    expect(proxy.requests.length).toBe(seen);
  });

  it("once the proxy passes through again, the refresh works with the refresh token kept all along", async () => {
    // A connection of its own (the file's worker, connected afresh): this refresh replaces its tokens.
    const { refreshToken: kept, status: connected } = await connectFresh();
    const oldAccessToken = (await bench.token(worker.workerId)).body.accessToken;
    expect(oldAccessToken).toBeTruthy();
    untilExpired(connected.expiresAt);
    const refreshed = refreshes(provider);
    const firstRequest = proxy.requests.length;
    // Every failure of the cases above first, each once, on this connection.
    for (const [label, mode, expected] of cases) {
      await backoffPassed(worker.workerId);
      proxy.setMode(mode);
      const failure = await bench.token(worker.workerId);
      expect(failure.status, `${label}: ${JSON.stringify(failure.body)}`).toBe(424);
      expect(failure.body.message).toMatch(expected);
    }
    expect(await bench.status(worker.workerId)).toMatchObject({ status: "connected", hasRefreshToken: true });

    await backoffPassed(worker.workerId);
    proxy.setMode("pass");
    const answer = await bench.token(worker.workerId);
    expect(answer.status, JSON.stringify(answer.body)).toBe(200);
    expect(answer.body.accessToken).not.toBe(oldAccessToken);
    expect(await provider.resourceStatus(answer.body.accessToken)).toBe(200);
    expect(refreshes(provider)).toBe(refreshed + 1);
    const sent = proxy.requests.slice(firstRequest);
    // One request per failing case, then the good one.
    expect(sent.length).toBeGreaterThan(cases.length);
    expect(sent.filter((r) => r.forwarded)).toHaveLength(1);
    expect(sent.at(-1)).toMatchObject({ forwarded: true });
    for (const request of sent) expect(request).toMatchObject({ grantType: "refresh_token", refreshToken: kept });
    expect(await bench.status(worker.workerId)).toMatchObject({ status: "connected", lastError: null, lastErrorAt: null });
  });
});

describe("concurrency", () => {
  it("50 concurrent GetOauthToken calls on one expiring token cause exactly one refresh_token grant, and all get the same new token", async () => {
    const { status } = await connectFresh();
    const old = (await bench.token(worker.workerId)).body.accessToken;
    untilRefreshDue(status.expiresAt);
    const refreshed = refreshes(provider);
    const errors = refreshErrors(provider);
    const forwarded = proxy.forwarded;
    const answers = await Promise.all(Array.from({ length: 50 }, () => bench.token(worker.workerId)));
    for (const answer of answers) expect(answer.status, JSON.stringify(answer.body)).toBe(200);
    const tokens = new Set(answers.map((a) => a.body.accessToken as string));
    expect(tokens.size).toBe(1);
    const [token] = [...tokens];
    expect(token).not.toBe(old);
    expect(refreshes(provider)).toBe(refreshed + 1);
    expect(proxy.forwarded).toBe(forwarded + 1);
    expect(refreshErrors(provider)).toBe(errors);
    expect(await provider.resourceStatus(token!)).toBe(200);
  });
});
