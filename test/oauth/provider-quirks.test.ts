/**
 * Provider quirks end to end (STYLE section 4): oidc-provider behind the quirk proxy, which
 * rewrites its token answers to show one quirk at a time; a Workyard server whose operator's
 * catalog (--provider-catalog) says one provider wants client_secret_basic.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { CatalogError } from "../../packages/server/src/main.js";
import { failed, ok, oauthWorkerSource, sleep, startBench, type DeployedWorker, type OAuthBench } from "../helpers/oauth-bench.js";
import { startQuirkProxy, type QuirkProxy } from "../helpers/quirk-proxy.js";
import { baseEnv, ntnBinary } from "../helpers/run-ntn.js";
import { startProvider, type TestProvider } from "../helpers/start-provider.js";
import { startTestServer } from "../helpers/start-server.js";
import { testClock } from "../helpers/clock.js";
import { tempDir } from "../helpers/tmp.js";

const TTL_S = 3;
const CONFIG_TTL_MS = 3000;
const CLIENT = { GITHUB_CLIENT_ID: "quirks-client" };

let bench: OAuthBench;
let provider: TestProvider;
let basicProvider: TestProvider;
let proxy: QuirkProxy;
let basicProxy: QuirkProxy;
/** In front of the same basic-only provider, with no catalog entry for its origin. */
let uncataloguedProxy: QuirkProxy;
let catalogDir: { dir: string; cleanup(): void };
const workers = {} as Record<"quirks" | "configTtl" | "basic" | "basicUncatalogued", DeployedWorker>;

/** The server's clock: moved where only Workyard must see time pass; the provider keeps real time. */
const clock = testClock();

/** Moves the server's clock into its refresh margin (half of a short lifetime) for this expiry. */
function untilRefreshDue(expiresAt: string, lifetimeMs: number): void {
  clock.advance(Math.max(0, Date.parse(expiresAt) - lifetimeMs / 2 - clock.now() + 300));
}

/** Moves the server's clock past this expiry (Workyard's own: accessTokenExpireMs). */
function untilExpired(expiresAt: string): void {
  clock.advance(Math.max(0, Date.parse(expiresAt) - clock.now() + 1000));
}

const refreshes = (p: TestProvider) => p.grants.success.refresh_token ?? 0;

beforeAll(async () => {
  proxy = await startQuirkProxy();
  basicProxy = await startQuirkProxy();
  uncataloguedProxy = await startQuirkProxy();
  catalogDir = tempDir("wy-catalog-");
  const catalogFile = path.join(catalogDir.dir, "providers.yaml");
  fs.writeFileSync(
    catalogFile,
    [
      "providers:",
      "  - name: local-basic",
      "    docs: https://datatracker.ietf.org/doc/html/rfc6749#section-2.3.1",
      `    match: ["${basicProxy.url}"]`,
      "    tokenAuthMethod: basic",
      "",
    ].join("\n"),
  );
  bench = await startBench({ providerCatalog: catalogFile, now: clock.now });
  const redirectUris = [`${bench.server.url}/workers/oauth/callback`];
  provider = await startProvider({ redirectUris, accessTokenTtl: TTL_S, clientId: "quirks-client", clientSecret: "quirks-secret-canary-post" });
  basicProvider = await startProvider({
    redirectUris,
    accessTokenTtl: TTL_S,
    clientId: "quirks-client",
    clientSecret: "quirks-secret-canary-basic",
    tokenEndpointAuthMethod: "client_secret_basic",
  });
  proxy.target = provider.tokenEndpoint;
  basicProxy.target = basicProvider.tokenEndpoint;
  uncataloguedProxy.target = basicProvider.tokenEndpoint;
  const viaProxy = { authorizationEndpoint: provider.authorizationEndpoint, tokenEndpoint: proxy.tokenEndpoint, resourceUrl: provider.resourceUrl };
  const secret = { ...CLIENT, GITHUB_CLIENT_SECRET: provider.clientSecret };
  const basicSecret = { ...CLIENT, GITHUB_CLIENT_SECRET: basicProvider.clientSecret };
  workers.quirks = await bench.deploy("quirks", oauthWorkerSource(viaProxy), secret);
  workers.configTtl = await bench.deploy("config-ttl", oauthWorkerSource(viaProxy, { accessTokenExpireMs: CONFIG_TTL_MS }), secret);
  workers.basic = await bench.deploy(
    "basic",
    oauthWorkerSource({ authorizationEndpoint: basicProvider.authorizationEndpoint, tokenEndpoint: basicProxy.tokenEndpoint, resourceUrl: basicProvider.resourceUrl }),
    basicSecret,
  );
  workers.basicUncatalogued = await bench.deploy(
    "basic-uncatalogued",
    oauthWorkerSource({ authorizationEndpoint: basicProvider.authorizationEndpoint, tokenEndpoint: uncataloguedProxy.tokenEndpoint, resourceUrl: basicProvider.resourceUrl }),
    basicSecret,
  );
}, 240_000);

afterAll(async () => {
  await bench?.stop();
  await provider?.stop();
  await basicProvider?.stop();
  await proxy?.stop();
  await basicProxy?.stop();
  await uncataloguedProxy?.stop();
  catalogDir?.cleanup();
});

beforeEach(() => {
  proxy.setMode("pass");
  // oidc-provider takes either method from any client_secret client; the proxy makes it strict.
  basicProxy.setMode("require-basic");
  uncataloguedProxy.setMode("require-basic");
  provider.setRotateRefreshToken(true);
});

describe("client authentication", () => {
  it("is client_secret_post by default: the secret in the body, no Authorization header", async () => {
    const before = proxy.requests.length;
    const { page } = await bench.connect(workers.quirks.workerId);
    expect(page.status).toBe(200);
    expect(page.text).toContain("githubAuth (github-oauth) is connected");
    const exchange = proxy.requests.slice(before).find((r) => r.grantType === "authorization_code");
    expect(exchange).toMatchObject({ clientSecretInBody: true, basicAuth: false, forwarded: true });
    expect(await bench.status(workers.quirks.workerId)).toMatchObject({ status: "connected", hasRefreshToken: true, expirySource: "provider" });
    const token = await bench.token(workers.quirks.workerId);
    expect(await provider.resourceStatus(token.body.accessToken)).toBe(200);
  });

  it("is client_secret_basic where the operator's catalog entry matches the token endpoint's origin, for the exchange and the refresh", async () => {
    const before = basicProxy.requests.length;
    const { page } = await bench.connect(workers.basic.workerId);
    expect(page.status, page.text).toBe(200);
    const connected = await bench.status(workers.basic.workerId);
    expect(connected).toMatchObject({ status: "connected", hasRefreshToken: true });
    const refreshed = refreshes(basicProvider);
    untilRefreshDue(connected.expiresAt, TTL_S * 1000);
    const token = await bench.token(workers.basic.workerId);
    expect(token.status, JSON.stringify(token.body)).toBe(200);
    expect(refreshes(basicProvider)).toBe(refreshed + 1);
    expect(await basicProvider.resourceStatus(token.body.accessToken)).toBe(200);
    const sent = basicProxy.requests.slice(before);
    expect(sent.map((r) => r.grantType)).toEqual(["authorization_code", "refresh_token"]);
    for (const request of sent) expect(request).toMatchObject({ basicAuth: true, clientSecretInBody: false });
  });

  it("without a catalog entry the exchange with a basic-only provider fails with a clear invalid_client error", async () => {
    const before = uncataloguedProxy.requests.length;
    const { page } = await bench.connect(workers.basicUncatalogued.workerId);
    expect(page.status).toBe(400);
    expect(page.text).toContain("Connection failed");
    expect(page.text).toContain("The provider rejected the client credentials (invalid_client: client authentication must use HTTP Basic");
    expect(page.text).not.toContain(basicProvider.clientSecret);
    expect(uncataloguedProxy.requests.slice(before)).toEqual([expect.objectContaining({ grantType: "authorization_code", clientSecretInBody: true, basicAuth: false })]);
    expect(await bench.status(workers.basicUncatalogued.workerId)).toMatchObject({ status: "not_connected", expiresAt: null });
  });

  it("with client_secret_basic, a wrong secret is rejected client credentials too (RFC 6749 §5.2: 401 with WWW-Authenticate), not an unreachable provider", async () => {
    await bench.setSecrets(workers.basic.workerId, { GITHUB_CLIENT_SECRET: "wrong-basic-secret-canary" });
    try {
      const { page } = await bench.connect(workers.basic.workerId);
      expect(page.status).toBe(400);
      expect(page.text).not.toContain("wrong-basic-secret-canary");
      expect(page.text).toContain("The provider rejected the client credentials");
    } finally {
      await bench.setSecrets(workers.basic.workerId, { GITHUB_CLIENT_SECRET: basicProvider.clientSecret });
    }
  });
});

describe("token answer formats", () => {
  it("reads GitHub-style form-encoded answers, for the exchange and the refresh", async () => {
    proxy.setMode("form");
    const { page } = await bench.connect(workers.quirks.workerId);
    expect(page.status, page.text).toBe(200);
    const connected = await bench.status(workers.quirks.workerId);
    // expires_in arrived as text in the form body and was read as a number.
    expect(connected).toMatchObject({ status: "connected", hasRefreshToken: true, expirySource: "provider" });
    expect(Date.parse(connected.expiresAt) - Date.parse(connected.connectedAt)).toBe(TTL_S * 1000);
    const refreshed = refreshes(provider);
    untilRefreshDue(connected.expiresAt, TTL_S * 1000);
    const token = await bench.token(workers.quirks.workerId);
    expect(token.status, JSON.stringify(token.body)).toBe(200);
    expect(refreshes(provider)).toBe(refreshed + 1);
    expect(await provider.resourceStatus(token.body.accessToken)).toBe(200);
    expect((await bench.status(workers.quirks.workerId)).lastRefreshAt).not.toBeNull();
  });

  it("reads a 200 carrying error=... in a form body as the error it is, at the exchange", async () => {
    await bench.server.call("RevokeOauth", { workerId: workers.quirks.workerId, oauthCapabilityKey: "githubAuth" });
    proxy.setMode("error-200", { grantType: "authorization_code" });
    const { page } = await bench.connect(workers.quirks.workerId);
    expect(page.status).toBe(400);
    expect(page.text).toContain("bad_verification_code");
    expect(page.text).toContain("The code passed is incorrect or expired.");
    expect(await bench.status(workers.quirks.workerId)).toMatchObject({ status: "not_connected" });
  });

  it("reads a 200 carrying error=invalid_grant in a form body on refresh as invalid_grant: re-authorization", async () => {
    proxy.setMode("form-200");
    const { page } = await bench.connect(workers.quirks.workerId);
    expect(page.status, page.text).toBe(200);
    const connected = await bench.status(workers.quirks.workerId);
    const refreshToken = proxy.lastIssuedRefreshToken()!;
    await (await provider.provider.RefreshToken.find(refreshToken))!.destroy();
    untilRefreshDue(connected.expiresAt, TTL_S * 1000);
    const answer = await bench.token(workers.quirks.workerId);
    expect(answer.status).toBe(409);
    expect(answer.body).toMatchObject({ code: "oauth_needs_reauthorization", hint: "Run: ntn workers oauth start githubAuth" });
    expect(answer.body.message).toContain("invalid_grant");
    expect(await bench.status(workers.quirks.workerId)).toMatchObject({ status: "needs_reauthorization", lastError: expect.stringContaining("invalid_grant") });
  });
});

describe("a missing expires_in", () => {
  it("with the worker's accessTokenExpireMs: that lifetime, expiry source config, and a refresh when it runs out", async () => {
    proxy.setMode("drop-expires-in");
    const { page } = await bench.connect(workers.configTtl.workerId);
    expect(page.status, page.text).toBe(200);
    const connected = await bench.status(workers.configTtl.workerId);
    expect(connected).toMatchObject({ status: "connected", expirySource: "config", hasRefreshToken: true });
    expect(Date.parse(connected.expiresAt) - Date.parse(connected.connectedAt)).toBe(CONFIG_TTL_MS);
    const shown = ok(await bench.cli(["workers", "oauth", "status", "githubAuth"], { cwd: workers.configTtl.dir }));
    expect(shown.stdout).toContain(`${connected.expiresAt} (accessTokenExpireMs)`);

    const refreshed = refreshes(provider);
    untilRefreshDue(connected.expiresAt, CONFIG_TTL_MS);
    const token = await bench.token(workers.configTtl.workerId);
    expect(token.status, JSON.stringify(token.body)).toBe(200);
    expect(refreshes(provider)).toBe(refreshed + 1);
    const after = await bench.status(workers.configTtl.workerId);
    expect(after).toMatchObject({ status: "connected", expirySource: "config" });
    expect(Date.parse(after.expiresAt) - Date.parse(after.lastRefreshAt)).toBe(CONFIG_TTL_MS);
  });

  it("without accessTokenExpireMs but with a refresh token: a default interval that oauth status shows, never 'does not expire'", async () => {
    proxy.setMode("drop-expires-in");
    const { page } = await bench.connect(workers.quirks.workerId);
    expect(page.status, page.text).toBe(200);
    const connected = await bench.status(workers.quirks.workerId);
    expect(connected).toMatchObject({ status: "connected", expirySource: "default", hasRefreshToken: true });
    expect(Date.parse(connected.expiresAt) - Date.parse(connected.connectedAt)).toBe(connected.defaultRefreshIntervalMs);
    expect(connected.nextRefreshAt).not.toBeNull();
    expect(Date.parse(connected.nextRefreshAt)).toBeLessThan(Date.parse(connected.expiresAt));

    const table = ok(await bench.cli(["workers", "oauth", "status"], { cwd: workers.quirks.dir }));
    expect(table.stdout).toContain("unknown (no expires_in, no accessTokenExpireMs): refreshed every 60 min and before each token read or env pull");
    expect(table.stdout).not.toContain("does not expire");
    const json = JSON.parse(ok(await bench.cli(["workers", "oauth", "status", "--json"], { cwd: workers.quirks.dir })).stdout);
    expect(json[0]).toMatchObject({ key: "githubAuth", expiresAt: connected.expiresAt, expirySource: "default" });
  });

  it("without accessTokenExpireMs, once the provider expired the token: env pull and oauth token refresh first (issue 13, fix 7)", async () => {
    proxy.setMode("drop-expires-in");
    const { page } = await bench.connect(workers.quirks.workerId);
    expect(page.status, page.text).toBe(200);
    const first = await bench.token(workers.quirks.workerId);
    // The provider's own lifetime passes (a real wait: the provider must see the token expire), and
    // on the server's clock the 5 s during which Workyard does not refresh a token of unknown expiry again.
    await sleep(TTL_S * 1000 + 1200);
    clock.advance(5200);
    expect(await provider.resourceStatus(first.body.accessToken)).toBe(401);

    // What the seed says to do after a 401: pull again. The token Workyard thought valid is refreshed first.
    const refreshed = refreshes(provider);
    const dotenv = path.join(workers.quirks.dir, ".env");
    fs.rmSync(dotenv, { force: true });
    ok(await bench.cli(["workers", "env", "pull", "--yes"], { cwd: workers.quirks.dir }));
    const pulled = /^OAUTH_[0-9A-F]+_ACCESS_TOKEN=(.+)$/m.exec(fs.readFileSync(dotenv, "utf8"))![1]!;
    expect(pulled).not.toBe(first.body.accessToken);
    expect(await provider.resourceStatus(pulled)).toBe(200);
    expect(refreshes(provider)).toBe(refreshed + 1);
    // At most one refresh per connection every 5 seconds: a read right after gets the same token.
    const again = await bench.token(workers.quirks.workerId);
    expect(again.body.accessToken).toBe(pulled);
    expect(refreshes(provider)).toBe(refreshed + 1);
    // --refresh forces one in any case.
    const forced = ok(await bench.cli(["workers", "oauth", "token", "githubAuth", "--refresh", "--plain"], { cwd: workers.quirks.dir })).stdout.trim();
    expect(forced).not.toBe(pulled);
    expect(refreshes(provider)).toBe(refreshed + 2);
    expect(await provider.resourceStatus(forced)).toBe(200);
  });

  it("without a refresh token either: the token does not expire for us, until an API rejects it", async () => {
    proxy.setMode(["drop-expires-in", "drop-refresh-token"], { grantType: "authorization_code" });
    const { page } = await bench.connect(workers.quirks.workerId);
    expect(page.status, page.text).toBe(200);
    const connected = await bench.status(workers.quirks.workerId);
    expect(connected).toMatchObject({ status: "connected", expiresAt: null, expirySource: "none", hasRefreshToken: false, nextRefreshAt: null });
    const table = ok(await bench.cli(["workers", "oauth", "status"], { cwd: workers.quirks.dir }));
    expect(table.stdout).toMatch(/githubAuth +connected +does not expire/);

    const first = await bench.token(workers.quirks.workerId);
    expect(first.body.expiresAt).toBeNull();
    const received = proxy.received;
    const refreshed = refreshes(provider);
    // The provider's own lifetime passes: Workyard does not know, and hands out the same token...
    await sleep(TTL_S * 1000 + 1200);
    const later = await bench.token(workers.quirks.workerId);
    expect(later.status).toBe(200);
    expect(later.body.accessToken).toBe(first.body.accessToken);
    expect(proxy.received).toBe(received);
    expect(refreshes(provider)).toBe(refreshed);
    // ...until an API rejects it.
    expect(await provider.resourceStatus(later.body.accessToken)).toBe(401);
  });

  it("with accessTokenExpireMs and no refresh token: once that lifetime passes, the error names oauth start", async () => {
    proxy.setMode(["drop-expires-in", "drop-refresh-token"], { grantType: "authorization_code" });
    const { page } = await bench.connect(workers.configTtl.workerId);
    expect(page.status, page.text).toBe(200);
    const connected = await bench.status(workers.configTtl.workerId);
    expect(connected).toMatchObject({ status: "connected", expirySource: "config", hasRefreshToken: false, nextRefreshAt: null });
    untilExpired(connected.expiresAt);
    const answer = await bench.token(workers.configTtl.workerId);
    expect(answer.status).toBe(409);
    expect(answer.body).toMatchObject({ code: "oauth_needs_reauthorization", hint: "Run: ntn workers oauth start githubAuth" });
    expect(answer.body.message).toContain("the access token expired and the provider issued no refresh token");
    const cli = failed(await bench.cli(["workers", "oauth", "token", "githubAuth"], { cwd: workers.configTtl.dir }));
    expect(cli.stdout).toBe("");
    expect(cli.stderr).toContain("ntn workers oauth start githubAuth");
  });
});

describe("refresh tokens", () => {
  it("a refresh answer without refresh_token keeps the old one, and the next refresh works with it (nango#298)", async () => {
    provider.setRotateRefreshToken(false);
    const { page } = await bench.connect(workers.quirks.workerId);
    expect(page.status, page.text).toBe(200);
    const original = proxy.lastIssuedRefreshToken()!;
    proxy.setMode("drop-refresh-token", { grantType: "refresh_token" });
    const before = proxy.requests.length;
    const refreshed = refreshes(provider);

    let status = await bench.status(workers.quirks.workerId);
    untilRefreshDue(status.expiresAt, TTL_S * 1000);
    const first = await bench.token(workers.quirks.workerId);
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    status = await bench.status(workers.quirks.workerId);
    expect(status).toMatchObject({ status: "connected", hasRefreshToken: true, lastError: null });

    untilRefreshDue(status.expiresAt, TTL_S * 1000);
    const second = await bench.token(workers.quirks.workerId);
    expect(second.status, JSON.stringify(second.body)).toBe(200);
    expect(second.body.accessToken).not.toBe(first.body.accessToken);
    expect(await provider.resourceStatus(second.body.accessToken)).toBe(200);
    expect(refreshes(provider)).toBe(refreshed + 2);
    const sent = proxy.requests.slice(before).filter((r) => r.grantType === "refresh_token");
    expect(sent.map((r) => r.refreshToken)).toEqual([original, original]);
  });

  it("a rotated refresh token is stored and used next; the old one is then invalid (nango#6136)", async () => {
    const { page } = await bench.connect(workers.quirks.workerId);
    expect(page.status, page.text).toBe(200);
    const r0 = proxy.lastIssuedRefreshToken()!;
    const before = proxy.requests.length;

    let status = await bench.status(workers.quirks.workerId);
    untilRefreshDue(status.expiresAt, TTL_S * 1000);
    expect((await bench.token(workers.quirks.workerId)).status).toBe(200);
    const r1 = proxy.lastIssuedRefreshToken()!;
    expect(r1).not.toBe(r0);

    status = await bench.status(workers.quirks.workerId);
    untilRefreshDue(status.expiresAt, TTL_S * 1000);
    const second = await bench.token(workers.quirks.workerId);
    expect(second.status, JSON.stringify(second.body)).toBe(200);
    expect(await provider.resourceStatus(second.body.accessToken)).toBe(200);
    const sent = proxy.requests.slice(before).filter((r) => r.grantType === "refresh_token");
    expect(sent.map((r) => r.refreshToken)).toEqual([r0, r1]);

    // The provider rotated: the first refresh token no longer works.
    const reuse = await fetch(provider.tokenEndpoint, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ grant_type: "refresh_token", refresh_token: r0, client_id: provider.clientId, client_secret: provider.clientSecret }).toString(),
    });
    expect(reuse.status).toBe(400);
    expect(((await reuse.json()) as { error: string }).error).toBe("invalid_grant");
  });
});

describe("an HTML error page (500) from the token endpoint", () => {
  it("on refresh is transient: the tokens are kept, status shows the last error, and the next refresh works", async () => {
    const { page } = await bench.connect(workers.quirks.workerId);
    expect(page.status, page.text).toBe(200);
    const kept = proxy.lastIssuedRefreshToken()!;
    const connected = await bench.status(workers.quirks.workerId);
    const first = await bench.token(workers.quirks.workerId);
    proxy.setMode("html-500");
    const forwarded = proxy.forwarded;
    untilRefreshDue(connected.expiresAt, TTL_S * 1000);
    // Due for refresh but not expired yet: the refresh fails, the still valid token is handed out.
    const during = await bench.token(workers.quirks.workerId);
    expect(during.status, JSON.stringify(during.body)).toBe(200);
    expect(during.body.accessToken).toBe(first.body.accessToken);
    expect(proxy.forwarded).toBe(forwarded);
    const failing = await bench.status(workers.quirks.workerId);
    expect(failing).toMatchObject({ status: "connected", hasRefreshToken: true });
    expect(failing.lastError).toContain("HTTP 500");
    expect(failing.lastErrorAt).not.toBeNull();
    const table = ok(await bench.cli(["workers", "oauth", "status"], { cwd: workers.quirks.dir }));
    expect(table.stdout).toContain("HTTP 500");

    // The failed refresh backs off; once that time has passed, the next one goes to the provider.
    await bench.server.server.store.db
      .updateTable("oauth_connections")
      .set({ next_refresh_at: clock.now() - 1 })
      .where("worker_id", "=", workers.quirks.workerId)
      .execute();
    proxy.setMode("pass");
    const before = proxy.requests.length;
    const after = await bench.token(workers.quirks.workerId);
    expect(after.status, JSON.stringify(after.body)).toBe(200);
    expect(after.body.accessToken).not.toBe(first.body.accessToken);
    expect(proxy.requests.slice(before).map((r) => r.refreshToken)).toEqual([kept]);
    expect(await bench.status(workers.quirks.workerId)).toMatchObject({ status: "connected", lastError: null });
  });

  it("at the exchange fails the flow in plain words and stores nothing", async () => {
    await bench.server.call("RevokeOauth", { workerId: workers.quirks.workerId, oauthCapabilityKey: "githubAuth" });
    proxy.setMode("html-500", { grantType: "authorization_code" });
    const { page } = await bench.connect(workers.quirks.workerId);
    expect(page.status).toBe(400);
    expect(page.text).toContain("Exchanging the authorization code failed");
    expect(page.text).toContain("HTTP 500");
    expect(page.html).not.toContain("Internal Server Error</h1>");
    expect(await bench.status(workers.quirks.workerId)).toMatchObject({ status: "not_connected" });
  });
});

describe("--provider-catalog", () => {
  it("an invalid file (unknown key) stops the server with a CatalogError naming the problem", async () => {
    const file = path.join(catalogDir.dir, "bad.yaml");
    fs.writeFileSync(file, "providers:\n  - name: acme\n    match: ['https://auth.acme.test']\n    tokenAuthMetod: basic\n");
    const error = await startTestServer({ providerCatalog: file }).then(
      async (server) => {
        await server.stop();
        return undefined;
      },
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(CatalogError);
    expect((error as Error).message).toContain("The OAuth provider catalog is invalid");
    expect((error as Error).message).toContain("/providers/0");
    expect((error as Error).message).toContain("tokenAuthMetod");

    const data = path.join(catalogDir.dir, "data");
    // The built CLI: a server that did start would not return, and would take this process's signals.
    const cli = await ntnBinary(["server", "--port", "0", "--data-dir", data, "--provider-catalog", file], { cwd: catalogDir.dir, env: baseEnv(catalogDir.dir), timeoutMs: 30_000 });
    expect(cli.code).toBe(5);
    expect(cli.stderr).toMatch(/^error: The OAuth provider catalog is invalid: .*tokenAuthMetod/m);
    expect(cli.stderr).not.toMatch(/\n\s+at /);
    expect(cli.stdout).not.toContain("Listening on");
  });
});
