/**
 * Tokens in runs and in env pull: a run that outlives its access token gets a refreshed one pushed
 * into its process; pull and exec say what to run when there is no token to give.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectNoCanary, failed, fingerprint, ok, oauthWorkerSource, startBench, type DeployedWorker, type OAuthBench } from "../helpers/oauth-bench.js";
import { startQuirkProxy, type QuirkProxy } from "../helpers/quirk-proxy.js";
import { SEED_TOKEN_VAR } from "../helpers/seed-worker.js";
import { startProvider, type TestProvider } from "../helpers/start-provider.js";

const TTL_S = 4;

let bench: OAuthBench;
let provider: TestProvider;
/** Passes every token request through, recording what the provider issued. */
let proxy: QuirkProxy;
/** Connected by `connected()`, by whichever test needs the connection first. */
let worker: DeployedWorker;
/** The same worker deployed again and never connected: what pull and exec do before a connection. */
let unconnected: DeployedWorker;

let connection: Promise<void> | undefined;
const connected = () =>
  (connection ??= (async () => {
    const { page } = await bench.connect(worker.workerId);
    expect(page.status, page.text).toBe(200);
  })());

const refreshes = () => provider.grants.success.refresh_token ?? 0;

interface Reads {
  reads: { fingerprint: string; status: number }[];
}

async function runTokenTwice(waitsMs: number[]): Promise<{ result: Reads; runId: string }> {
  const answer = await bench.server.call("RunCapability", { workerId: worker.workerId, capabilityKey: "tokenTwice", args: { waitsMs } });
  expect(answer.status, JSON.stringify(answer.body)).toBe(200);
  return answer.body;
}

beforeAll(async () => {
  bench = await startBench();
  provider = await startProvider({ redirectUris: [`${bench.server.url}/workers/oauth/callback`], accessTokenTtl: TTL_S, clientSecret: "runs-secret-canary-93af" });
  proxy = await startQuirkProxy({ target: provider.tokenEndpoint });
  const source = oauthWorkerSource({ authorizationEndpoint: provider.authorizationEndpoint, tokenEndpoint: proxy.tokenEndpoint, resourceUrl: provider.resourceUrl });
  const secrets = { GITHUB_CLIENT_ID: provider.clientId, GITHUB_CLIENT_SECRET: provider.clientSecret };
  worker = await bench.deploy("runs", source, secrets);
  unconnected = await bench.deploy("runs-unconnected", source, secrets);
}, 240_000);

afterAll(async () => {
  await bench?.stop();
  await provider?.stop();
  await proxy?.stop();
});

describe("before the connection exists", () => {
  it("env pull writes the secrets, no token, and a notice naming oauth start (exit 0)", async () => {
    const pull = ok(await bench.cli(["workers", "env", "pull"], { cwd: unconnected.dir }));
    expect(pull.stderr).toContain("warning: githubAuth is not connected yet; run `ntn workers oauth start githubAuth`.");
    const dotenv = fs.readFileSync(path.join(unconnected.dir, ".env"), "utf8");
    expect(dotenv).toContain(`GITHUB_CLIENT_SECRET=${provider.clientSecret}\n`);
    expect(dotenv).not.toContain(SEED_TOKEN_VAR);
  });

  it("exec of the tool fails with the same advice", async () => {
    const exec = failed(await bench.cli(["workers", "exec", "getGitHubRepos"], { cwd: unconnected.dir }));
    expect(exec.stdout).toBe("");
    expect(exec.stderr).toContain(`Missing OAuth access token env var "${SEED_TOKEN_VAR}"`);
    expect(exec.stderr).toContain('Connection "githubAuth" is not connected. Run: ntn workers oauth start githubAuth');
  });
});

describe("tokens in runs", () => {
  it("a tool that reads accessToken() twice, waiting past the token's life, sees a different valid token the second time", async () => {
    await connected();
    const before = (await bench.token(worker.workerId)).body;
    const lifeLeft = Date.parse(before.expiresAt) - Date.now();
    const wait = lifeLeft + 1500;
    const refreshed = refreshes();
    const issuedBefore = proxy.answers.length;
    const { result, runId } = await runTokenTwice([wait]);
    expect(result.reads).toHaveLength(2);
    const [first, second] = result.reads;
    expect(first).toEqual({ fingerprint: fingerprint(before.accessToken), status: 200 });
    expect(second!.fingerprint).not.toBe(first!.fingerprint);
    expect(second!.status).toBe(200);
    // The server refreshed during the run and pushed the new token into the process: the second
    // read holds a token the provider issued by a refresh during the run. (Usually one refresh; on
    // a loaded machine the run can outlast the next renewal too, which pushes a newer one.)
    expect(refreshes()).toBeGreaterThanOrEqual(refreshed + 1);
    const issued = proxy.answers.slice(issuedBefore);
    expect(issued.length).toBeGreaterThanOrEqual(1);
    for (const answer of issued) expect(answer.grantType).toBe("refresh_token");
    expect(issued.map((a) => fingerprint(a.accessToken!))).toContain(second!.fingerprint);
    expect(await bench.status(worker.workerId)).toMatchObject({ status: "connected", lastError: null });
    const now = (await bench.token(worker.workerId)).body;

    const logs = await bench.server.call("GetRunLogs", { workerId: worker.workerId, runId });
    expect(logs.status).toBe(200);
    expect(JSON.stringify(logs.body)).toContain("read the token 2 times");
    expectNoCanary({ "run logs": JSON.stringify(logs.body), "server log": bench.server.logs() }, { first: before.accessToken, second: now.accessToken, secret: provider.clientSecret });
  });

  it("a run that outlives several token lifetimes sees a valid token at every read", async () => {
    await connected();
    const start = (await bench.token(worker.workerId)).body;
    const lifeLeft = Math.max(0, Date.parse(start.expiresAt) - Date.now());
    // Reads at about 0, 1.1 and 2.3 token lifetimes after the first expiry.
    const waits = [lifeLeft + 500, TTL_S * 1000 + 500, TTL_S * 1000 + 500];
    const { result } = await runTokenTwice(waits);
    expect(result.reads).toHaveLength(4);
    expect(result.reads.map((r) => r.status)).toEqual([200, 200, 200, 200]);
    expect(new Set(result.reads.map((r) => r.fingerprint)).size).toBe(4);
  });
});

describe("env pull after expiry", () => {
  it("writes a fresh token, with its expiry above it, refreshed first", async () => {
    await connected();
    const before = (await bench.token(worker.workerId)).body;
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, Date.parse(before.expiresAt) - Date.now() + 200)));
    const refreshed = refreshes();
    const pull = ok(await bench.cli(["workers", "env", "pull", "--yes"], { cwd: worker.dir }));
    expect(pull.stderr).not.toContain("warning:");
    expect(refreshes()).toBe(refreshed + 1);
    const dotenv = fs.readFileSync(path.join(worker.dir, ".env"), "utf8");
    const token = new RegExp(`^${SEED_TOKEN_VAR}=(.+)$`, "m").exec(dotenv)?.[1];
    expect(token).toBeTruthy();
    expect(token).not.toBe(before.accessToken);
    const now = (await bench.token(worker.workerId)).body;
    expect(token).toBe(now.accessToken);
    expect(dotenv).toContain(`# ${SEED_TOKEN_VAR} expires ${now.expiresAt}\n${SEED_TOKEN_VAR}=`);
    const local = ok(await bench.cli(["workers", "exec", "getGitHubRepos", "--local"], { cwd: worker.dir }));
    expect(JSON.parse(local.stdout)[0].name).toBe("repo-one");
  });
});
