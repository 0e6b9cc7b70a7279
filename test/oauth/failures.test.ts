/**
 * Failures when starting a connection and on the callback: what `ntn workers oauth start` and the
 * callback page (in headless Chromium, through BROWSER) tell the person, and what is stored.
 */
import fs from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { authorizeOverHttp, openPage } from "../helpers/http-browser.js";
import { expectNoCanary, failed, ok, oauthWorkerSource, startBench, type DeployedWorker, type OAuthBench } from "../helpers/oauth-bench.js";
import { startProvider, type TestProvider } from "../helpers/start-provider.js";

let bench: OAuthBench;
let provider: TestProvider;
/** A provider whose client has some other redirect URI registered. */
let elsewhere: TestProvider;
/**
 * `main` is never connected (its tests assert nothing is stored); `later` is the one the --no-wait
 * test connects, so no other test depends on whether that test ran first.
 */
const workers = {} as Record<"main" | "later" | "mismatch" | "unconfigured", DeployedWorker>;
const WRONG_SECRET = "wrong-client-secret-canary-7c1e";

/** What the browser showed since `from` (the log is appended to by browser-approve.mjs). */
function browserSince(from: number): string {
  return fs.readFileSync(bench.browserLog, "utf8").slice(from);
}
const logSize = () => fs.statSync(bench.browserLog).size;

beforeAll(async () => {
  bench = await startBench();
  const callback = `${bench.server.url}/workers/oauth/callback`;
  provider = await startProvider({ redirectUris: [callback], clientSecret: "failures-secret-canary-1" });
  elsewhere = await startProvider({ redirectUris: ["http://127.0.0.1:9/registered/elsewhere"], clientSecret: "failures-secret-canary-2" });
  const client = (p: TestProvider) => ({ GITHUB_CLIENT_ID: p.clientId, GITHUB_CLIENT_SECRET: p.clientSecret });
  workers.main = await bench.deploy("main", oauthWorkerSource(provider), client(provider));
  workers.later = await bench.deploy("later", oauthWorkerSource(provider), client(provider));
  workers.mismatch = await bench.deploy("mismatch", oauthWorkerSource(elsewhere), client(elsewhere));
  workers.unconfigured = await bench.deploy("unconfigured", oauthWorkerSource(provider));
}, 240_000);

afterAll(async () => {
  await bench?.stop();
  await provider?.stop();
  await elsewhere?.stop();
});

describe("ntn workers oauth start", () => {
  it("without a client id names GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET, and opens no browser", async () => {
    const from = logSize();
    const result = failed(await bench.cli(["workers", "oauth", "start", "githubAuth"], { cwd: workers.unconfigured.dir }));
    expect(result.stdout).toBe("");
    expect(result.stderr).toBe(
      'error: "githubAuth" has no client id and no client secret yet.\n  hint: Set them: ntn workers env set GITHUB_CLIENT_ID=... GITHUB_CLIENT_SECRET=...\n',
    );
    expect(browserSince(from)).toBe("");
    const api = await bench.server.call("StartOauth", { workerId: workers.unconfigured.workerId, oauthCapabilityKey: "githubAuth" });
    expect(api.status).toBe(409);
    expect(api.body).toMatchObject({ code: "oauth_not_configured" });
    expect(await bench.status(workers.unconfigured.workerId)).toMatchObject({ status: "not_connected" });
    // The names come from what the build recorded, not from loading the worker again.
    const recorded = await bench.server.server.store.db.selectFrom("deployments").select("client_secret_names").where("worker_id", "=", workers.unconfigured.workerId).where("status", "=", "ready").executeTakeFirstOrThrow();
    expect(JSON.parse(recorded.client_secret_names!)).toEqual([{ key: "githubAuth", names: ["GITHUB_CLIENT_ID", "GITHUB_CLIENT_SECRET"] }]);
  });

  it("access_denied: the callback page and oauth start (exit 5) say so in plain words; nothing is stored", async () => {
    const from = logSize();
    const codes = { ...provider.grants.success };
    const result = failed(await bench.cli(["workers", "oauth", "start", "githubAuth"], { cwd: workers.main.dir, env: { WY_BROWSER_ACTION: "deny" } }));
    expect(result.stdout).toBe("");
    expect(result.stderr).toContain("error: Access was denied at the provider (End-User aborted interaction).\n  hint: Run `ntn workers oauth start` again and approve the request.\n");
    expect(result.stderr).not.toContain("✔ Connected");
    const page = browserSince(from);
    expect(page).toContain(`URL ${bench.server.url}/workers/oauth/callback\n`);
    expect(page).toContain("Connection failed");
    expect(page).toContain("Access was denied at the provider (End-User aborted interaction).");
    expect(await bench.status(workers.main.workerId)).toMatchObject({ status: "not_connected", expiresAt: null });
    expect(provider.grants.success).toEqual(codes);
  });

  it("redirect_uri_mismatch: the provider shows its own page and never comes back; --timeout ends with the exact redirect URL to register", async () => {
    const from = logSize();
    const result = failed(await bench.cli(["workers", "oauth", "start", "githubAuth", "--timeout", "5"], { cwd: workers.mismatch.dir }));
    const redirect = `${bench.server.url}/workers/oauth/callback`;
    expect(result.stderr).toContain("error: Timed out after 5 seconds waiting for the authorization of githubAuth.\n");
    expect(result.stderr).toContain(`  hint: If the provider showed an error page (a redirect URI mismatch, say), register exactly ${redirect} with the provider, then run \`ntn workers oauth start githubAuth\` again.\n`);
    // The browser stayed on the provider's error page.
    const page = browserSince(from);
    expect(page).toContain(`URL ${elsewhere.issuer}/auth`);
    expect(page).toMatch(/redirect_uri did not match/);
    expect(page).not.toContain("/workers/oauth/callback\n");
    expect(await bench.status(workers.mismatch.workerId)).toMatchObject({ status: "not_connected" });
    expect(elsewhere.grants.success.authorization_code ?? 0).toBe(0);
  });

  it("a wrong client secret: the page and the CLI say the provider rejected the client credentials and name the secrets to check", async () => {
    await bench.setSecrets(workers.main.workerId, { GITHUB_CLIENT_SECRET: WRONG_SECRET });
    try {
      const from = logSize();
      const errors = provider.grants.error.authorization_code ?? 0;
      const result = failed(await bench.cli(["workers", "oauth", "start", "githubAuth"], { cwd: workers.main.dir }));
      const page = browserSince(from);
      expect(provider.grants.error.authorization_code).toBe(errors + 1);
      expect(result.stderr).toMatch(/^error: Exchanging the authorization code failed: The provider rejected the client credentials \(invalid_client/m);
      expect(page).toContain("The provider rejected the client credentials (invalid_client");
      expectNoCanary({ stderr: result.stderr, stdout: result.stdout, page, "server log": bench.server.logs() }, { "the wrong secret": WRONG_SECRET, "the client secret": provider.clientSecret });
      expect(await bench.status(workers.main.workerId)).toMatchObject({ status: "not_connected" });
      for (const name of ["GITHUB_CLIENT_ID", "GITHUB_CLIENT_SECRET"]) {
        expect(result.stderr, "the CLI's hint").toMatch(new RegExp(`hint: .*${name}`));
        expect(page, "the callback page").toContain(name);
      }
    } finally {
      await bench.setSecrets(workers.main.workerId, { GITHUB_CLIENT_SECRET: provider.clientSecret });
    }
  });

  it("--no-wait returns at once, leaving the flow pending until the person approves", async () => {
    const result = ok(await bench.cli(["workers", "oauth", "start", "githubAuth", "--no-wait"], { cwd: workers.later.dir, env: { BROWSER: "true" } }));
    expect(result.stdout).toBe("");
    expect(result.stderr).toContain("✔ Opening browser to complete OAuth flow...");
    expect(result.stderr).toContain("After completing the flow in your browser, return to the CLI.");
    expect(result.stderr).not.toContain("Waiting for the authorization");
    const authorizationUrl = /^ {2}(http\S+\/auth\?\S+)$/m.exec(result.stderr)?.[1];
    expect(authorizationUrl).toBeTruthy();
    const state = new URL(authorizationUrl!).searchParams.get("state")!;
    const pending = await bench.server.call("GetOauthFlow", { workerId: workers.later.workerId, state });
    expect(pending).toMatchObject({ status: 200, body: { status: "pending" } });
    expect(await bench.status(workers.later.workerId)).toMatchObject({ status: "not_connected" });

    // The person approves later; the flow completes as if oauth start were still waiting.
    const outcome = await authorizeOverHttp(authorizationUrl!, { callbackPrefix: `${bench.server.url}/workers/oauth/callback` });
    const page = await openPage(outcome.callbackUrl!);
    expect(page.status).toBe(200);
    expect(page.text).toContain("is connected");
    const done = await bench.server.call("GetOauthFlow", { workerId: workers.later.workerId, state });
    expect(done.body).toEqual({ status: "connected" });
    expect(await bench.status(workers.later.workerId)).toMatchObject({ status: "connected", hasRefreshToken: true });
  });
});
