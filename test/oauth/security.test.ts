/**
 * OAuth security: single-use state bound to its flow, a callback page that echoes nothing, flows
 * scoped to their workspace, and canary secrets (the client secret, every access and refresh
 * token issued) that never show up in logs, run logs, error messages or `env list`.
 */
import crypto from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTokenService } from "../../packages/server/src/auth/tokens.js";
import { createWorkspace } from "../../packages/server/src/workspaces/service.js";
import { authorizeOverHttp, openPage } from "../helpers/http-browser.js";
import { testClock } from "../helpers/clock.js";
import { expectNoCanary, failed, ok, oauthWorkerSource, startBench, type DeployedWorker, type OAuthBench } from "../helpers/oauth-bench.js";
import { startQuirkProxy, type QuirkProxy } from "../helpers/quirk-proxy.js";
import { SEED_TOKEN_VAR } from "../helpers/seed-worker.js";
import { startProvider, type TestProvider } from "../helpers/start-provider.js";

const TTL_S = 3;
/** The server's clock: moved where only Workyard must see time pass. */
const clock = testClock();
const CLIENT_SECRET = "security-client-secret-canary-8f3a";

let bench: OAuthBench;
let provider: TestProvider;
/** Passes through, recording every token the provider issues: the canaries. */
let proxy: QuirkProxy;
let worker: DeployedWorker;
let other: { token: string; workspaceId: string; worker: DeployedWorker };
/** Everything shown to a person or written to a log in this file, by where it was seen. */
const seen: Record<string, string> = {};

const callbackBase = () => `${bench.server.url}/workers/oauth/callback`;

/** The parts of an error answer that must not tell another workspace's worker from an unknown one. */
function fingerprintOf(answer: { status: number; body: any }, id: string) {
  const { request_id: _ignored, ...rest } = answer.body as Record<string, unknown>;
  return { httpStatus: answer.status, ...JSON.parse(JSON.stringify(rest).replaceAll(id, "<ID>")) };
}

function expectPlainRefusal(page: { status: number; html: string; text: string }, mustNotEcho: string[]): void {
  expect(page.status).toBe(400);
  expect(page.text).toContain("Authorization link not valid");
  expect(page.text).toContain("This authorization response is unknown, expired or already used.");
  expect(page.text).toContain("Start again with `ntn workers oauth start <key>`.");
  for (const value of mustNotEcho) expect(page.html, `the page echoes ${value.slice(0, 12)}…`).not.toContain(value);
}

beforeAll(async () => {
  bench = await startBench({ now: clock.now });
  provider = await startProvider({ redirectUris: [callbackBase()], accessTokenTtl: TTL_S, clientSecret: CLIENT_SECRET });
  proxy = await startQuirkProxy({ target: provider.tokenEndpoint });
  worker = await bench.deploy(
    "secure",
    oauthWorkerSource({ authorizationEndpoint: provider.authorizationEndpoint, tokenEndpoint: proxy.tokenEndpoint, resourceUrl: provider.resourceUrl }),
    { GITHUB_CLIENT_ID: provider.clientId, GITHUB_CLIENT_SECRET: CLIENT_SECRET },
  );
  const db = bench.server.server.store.db;
  const created = await createWorkspace(db, createTokenService(db, bench.server.server.store.changes), "Other team");
  const otherEnv = { NOTION_API_TOKEN: created.token, NOTION_WORKSPACE_ID: created.workspace.id };
  other = {
    token: created.token,
    workspaceId: created.workspace.id,
    worker: await bench.deploy("theirs", oauthWorkerSource(provider), undefined, { env: otherEnv }),
  };
}, 240_000);

afterAll(async () => {
  await bench?.stop();
  await proxy?.stop();
  await provider?.stop();
});

describe("the callback page and state", () => {
  it("refuses a replayed state (the same callback URL twice) in plain words, echoing nothing and showing no token", async () => {
    const codes = provider.grants.success.authorization_code ?? 0;
    const started = await bench.server.call("StartOauth", { workerId: worker.workerId, oauthCapabilityKey: "githubAuth" });
    const { callbackUrl } = await authorizeOverHttp(started.body.authorizationUrl, { callbackPrefix: callbackBase() });
    const query = new URL(callbackUrl!).search;
    const code = new URL(callbackUrl!).searchParams.get("code")!;
    expect(code).toBeTruthy();

    const first = await openPage(callbackUrl!);
    expect(first.status).toBe(200);
    expect(first.text).toContain("githubAuth (github-oauth) is connected for worker secure");
    const replay = await openPage(callbackUrl!);
    expectPlainRefusal(replay, [code, started.body.state, query.slice(1)]);
    seen["callback page"] = first.html;
    seen["replayed callback page"] = replay.html;

    // One exchange only, and the connection from the first use stands.
    expect(provider.grants.success.authorization_code).toBe(codes + 1);
    const token = (await bench.token(worker.workerId)).body.accessToken as string;
    expect(first.html).not.toContain(token);
    expect(first.html).not.toContain(code);
    expect(first.html).not.toContain(proxy.lastIssuedRefreshToken()!);
    expect(await bench.status(worker.workerId)).toMatchObject({ status: "connected" });
    expect((await bench.server.call("GetOauthFlow", { workerId: worker.workerId, state: started.body.state })).body).toEqual({ status: "connected" });
  });

  it("refuses a forged state, a missing state and an error with a forged state, echoing nothing", async () => {
    const before = proxy.received;
    const forged = await openPage(`${callbackBase()}?code=forged-code-canary-1&state=forged-state-canary-2`);
    expectPlainRefusal(forged, ["forged-code-canary-1", "forged-state-canary-2"]);
    const missing = await openPage(`${callbackBase()}?code=forged-code-canary-3`);
    expectPlainRefusal(missing, ["forged-code-canary-3"]);
    const script = "<script>alert('canary-xss')</script>";
    const error = await openPage(`${callbackBase()}?error=access_denied&error_description=${encodeURIComponent(script)}&state=forged-state-canary-4`);
    expectPlainRefusal(error, ["canary-xss", "forged-state-canary-4"]);
    // Nothing reached the provider's token endpoint.
    expect(proxy.received).toBe(before);
  });

  it("a real state with a forged code fails that flow (and uses up its state), without echoing the code", async () => {
    const started = await bench.server.call("StartOauth", { workerId: worker.workerId, oauthCapabilityKey: "githubAuth" });
    const url = `${callbackBase()}?code=forged-code-canary-5&state=${started.body.state}`;
    const page = await openPage(url);
    expect(page.status).toBe(400);
    expect(page.text).toContain("Connection failed");
    expect(page.text).toContain("Exchanging the authorization code failed: The provider refused the grant (invalid_grant");
    expect(page.html).not.toContain("forged-code-canary-5");
    expect(page.html).not.toContain(started.body.state);
    const flow = await bench.server.call("GetOauthFlow", { workerId: worker.workerId, state: started.body.state });
    expect(flow.body).toMatchObject({ status: "failed", error: expect.stringContaining("invalid_grant") });
    expectPlainRefusal(await openPage(url), ["forged-code-canary-5"]);
    seen["failed callback page"] = page.html;
    seen["GetOauthFlow answer"] = JSON.stringify(flow.body);
  });
});

describe("workspaces", () => {
  it("another workspace cannot read or complete a flow, nor touch the connection: it answers like an unknown worker or flow", async () => {
    const started = await bench.server.call("StartOauth", { workerId: worker.workerId, oauthCapabilityKey: "githubAuth" });
    const state = started.body.state as string;
    const unknownWorker = crypto.randomUUID();

    const actions: [string, (workerId: string) => Record<string, unknown>][] = [
      ["GetOauthFlow", (workerId) => ({ workerId, state })],
      ["StartOauth", (workerId) => ({ workerId, oauthCapabilityKey: "githubAuth" })],
      ["GetOauthToken", (workerId) => ({ workerId, oauthCapabilityKey: "githubAuth" })],
      ["GetOauthStatus", (workerId) => ({ workerId })],
      ["RevokeOauth", (workerId) => ({ workerId, oauthCapabilityKey: "githubAuth" })],
    ];
    for (const [action, body] of actions) {
      const foreign = await bench.server.call(action, body(worker.workerId), other.token);
      const unknown = await bench.server.call(action, body(unknownWorker), other.token);
      expect(foreign.status, `${action}: ${JSON.stringify(foreign.body)}`).toBe(404);
      expect(foreign.body.code, action).toBe("worker_not_found");
      expect(fingerprintOf(foreign, worker.workerId), action).toEqual(fingerprintOf(unknown, unknownWorker));
      seen[`${action} from another workspace`] = JSON.stringify(foreign.body);
    }

    // Through its own worker, the other workspace finds no such flow: exactly like a made-up state.
    const theirs = await bench.server.call("GetOauthFlow", { workerId: other.worker.workerId, state }, other.token);
    const madeUp = await bench.server.call("GetOauthFlow", { workerId: other.worker.workerId, state: "made-up-state" }, other.token);
    expect(theirs.status).toBe(404);
    expect(theirs.body.code).toBe("oauth_flow_not_found");
    expect(fingerprintOf(theirs, state)).toEqual(fingerprintOf(madeUp, "made-up-state"));

    // Completed by the person who started it: the token lands on our worker only.
    const { callbackUrl } = await authorizeOverHttp(started.body.authorizationUrl, { callbackPrefix: callbackBase() });
    expect((await openPage(callbackUrl!)).status).toBe(200);
    const after = await bench.server.call("GetOauthFlow", { workerId: other.worker.workerId, state }, other.token);
    expect(after.status).toBe(404);
    const theirStatus = await bench.server.call("GetOauthStatus", { workerId: other.worker.workerId }, other.token);
    expect(theirStatus.body.connections).toEqual([expect.objectContaining({ key: "githubAuth", status: "not_connected" })]);
    expect((await bench.server.call("GetOauthFlow", { workerId: worker.workerId, state })).body).toEqual({ status: "connected" });
    // The other workspace's CLI sees nothing of ours either.
    const theirCli = failed(
      await bench.cli(["workers", "oauth", "token", "githubAuth", "--worker-id", worker.workerId], { env: { NOTION_API_TOKEN: other.token, NOTION_WORKSPACE_ID: other.workspaceId } }),
    );
    expect(theirCli.stdout).toBe("");
    seen["other workspace's CLI"] = theirCli.stderr;
  });
});

describe("a manifest's authorization parameters", () => {
  it("cannot replace the protocol's own (redirect_uri, state, PKCE, response_type, client_id): the code comes back to this server and the flow completes", async () => {
    const elsewhere = "http://127.0.0.1:9/steal";
    // Both ways a manifest could try: its authorizationParams, and a query on its endpoint.
    const source = oauthWorkerSource({
      authorizationEndpoint: `${provider.authorizationEndpoint}?redirect_uri=${encodeURIComponent(elsewhere)}&state=theirs-too`,
      tokenEndpoint: provider.tokenEndpoint,
      resourceUrl: provider.resourceUrl,
    }).replace(
      'scope: "repo user",',
      `scope: "repo user",
  authorizationParams: {
    redirect_uri: ${JSON.stringify(elsewhere)},
    state: "theirs",
    code_challenge: "theirs-challenge",
    code_challenge_method: "plain",
    response_type: "token",
    client_id: "someone-else",
    prompt: "consent",
  },`,
    );
    expect(source).toContain("authorizationParams");
    const overriding = await bench.deploy("overriding", source, { GITHUB_CLIENT_ID: provider.clientId, GITHUB_CLIENT_SECRET: CLIENT_SECRET });

    const started = await bench.server.call("StartOauth", { workerId: overriding.workerId, oauthCapabilityKey: "githubAuth" });
    expect(started.status, JSON.stringify(started.body)).toBe(200);
    const params = new URL(started.body.authorizationUrl).searchParams;
    expect(params.getAll("redirect_uri")).toEqual([callbackBase()]);
    expect(params.getAll("state")).toEqual([started.body.state]);
    expect(params.getAll("response_type")).toEqual(["code"]);
    expect(params.getAll("client_id")).toEqual([provider.clientId]);
    expect(params.getAll("code_challenge_method")).toEqual(["S256"]);
    expect(params.getAll("code_challenge")).toHaveLength(1);
    expect(params.get("code_challenge")).not.toBe("theirs-challenge");
    // A parameter the protocol does not own is the worker's to set.
    expect(params.get("prompt")).toBe("consent");

    // The real authorization server checks the PKCE verifier against our challenge.
    const { callbackUrl } = await authorizeOverHttp(started.body.authorizationUrl, { callbackPrefix: callbackBase() });
    const page = await openPage(callbackUrl!);
    expect(page.status, page.text).toBe(200);
    expect(await bench.status(overriding.workerId)).toMatchObject({ status: "connected" });
  });
});

describe("canary secrets", () => {
  it("the client secret and every access and refresh token never appear in server logs, run logs, error messages or env list", async () => {
    const run = (...argv: string[]) => bench.cli(argv, { cwd: worker.dir });
    // A run that uses the token, then a refresh, then a run during which the token is renewed.
    const exec = ok(await run("workers", "exec", "getGitHubRepos"));
    seen["exec stdout"] = exec.stdout;
    seen["exec stderr"] = exec.stderr;
    const status = await bench.status(worker.workerId);
    clock.advance(Math.max(0, Date.parse(status.expiresAt) - (TTL_S * 1000) / 2 - clock.now() + 300));
    expect((await bench.token(worker.workerId)).status).toBe(200);
    const twice = await bench.server.call("RunCapability", { workerId: worker.workerId, capabilityKey: "tokenTwice", args: { waitsMs: [TTL_S * 1000] } });
    expect(twice.status, JSON.stringify(twice.body)).toBe(200);
    seen["tokenTwice result"] = JSON.stringify(twice.body);

    // A failed run and a provider refusal, for their error messages.
    await (await provider.provider.RefreshToken.find(proxy.lastIssuedRefreshToken()!))!.destroy();
    const current = await bench.status(worker.workerId);
    clock.advance(Math.max(0, Date.parse(current.expiresAt) - clock.now() + 1000));
    const refused = await bench.token(worker.workerId);
    expect(refused.status).toBe(409);
    seen["GetOauthToken error"] = JSON.stringify(refused.body);
    const failedRun = failed(await run("workers", "exec", "getGitHubRepos"));
    seen["failed exec stderr"] = failedRun.stderr;
    const pull = ok(await run("workers", "env", "pull", "--no-file", "--yes"));
    // The pull prints secrets by design (--no-file): only its notices are checked.
    seen["env pull notices"] = pull.stderr;
    expect(pull.stdout).not.toContain(SEED_TOKEN_VAR);

    for (const format of [[], ["--json"], ["--plain"]]) {
      const list = ok(await run("workers", "env", "list", ...format));
      seen[`env list ${format.join(" ") || "table"}`] = list.stdout + list.stderr;
      expect(list.stdout).toContain("GITHUB_CLIENT_SECRET");
    }
    seen["oauth status --json"] = ok(await run("workers", "oauth", "status", "--json")).stdout;
    seen["capabilities list --json"] = ok(await run("workers", "capabilities", "list", "--json")).stdout;

    const runs = await bench.server.call("ListRunsForWorker", { workerId: worker.workerId });
    expect(runs.status).toBe(200);
    seen["runs list"] = JSON.stringify(runs.body);
    const runIds = (runs.body.runs as { runId: string }[]).map((r) => r.runId);
    expect(runIds.length).toBeGreaterThanOrEqual(3);
    for (const runId of runIds) {
      const logs = await bench.server.call("GetRunLogs", { workerId: worker.workerId, runId });
      expect(logs.status).toBe(200);
      seen[`run logs ${runId}`] = JSON.stringify(logs.body);
    }
    seen["server log"] = bench.server.logs();
    expect(seen["server log"]).toContain("token refresh failed");

    const issued = proxy.answers.flatMap((a) => [a.accessToken, a.refreshToken]).filter((t): t is string => Boolean(t));
    expect(issued.length).toBeGreaterThanOrEqual(8);
    const canaries: Record<string, string> = { "the client secret": CLIENT_SECRET };
    issued.forEach((token, i) => {
      canaries[`issued token #${i}`] = token;
    });
    expectNoCanary(seen, canaries);
  });
});
