/**
 * Inspecting and revoking a connection with our ntn: `oauth token` (default, --plain, --json),
 * `oauth status` (table and --json), `capabilities list` with the connection beside the OAuth
 * capability, and `oauth revoke` (RFC 7009 at the provider's discovered revocation endpoint).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { renderTable } from "../helpers/cli.js";
import { testClock } from "../helpers/clock.js";
import { failed, ok, oauthWorkerSource, startBench, type DeployedWorker, type OAuthBench } from "../helpers/oauth-bench.js";
import { SEED_TOKEN_VAR } from "../helpers/seed-worker.js";
import { startProvider, type TestProvider } from "../helpers/start-provider.js";

/**
 * A lifetime no loaded machine crosses while a test reads the token (a real 4 s one was refreshed
 * under the tests' feet): the server's clock, not time passing, takes it into its refresh margin.
 */
const TTL_S = 600;
const STATUS_HEADERS = ["KEY", "STATUS", "EXPIRES AT", "LAST REFRESH", "NEXT REFRESH", "LAST ERROR"];

let bench: OAuthBench;
// The server's clock: moved to the token's refresh margin instead of sleeping into it.
const clock = testClock();
let provider: TestProvider;
/** Connected by `connected()`, by whichever test needs the connection first, and never revoked. */
let worker: DeployedWorker;
/** Never connected: what status, capabilities list and token say before a connection. */
let unconnected: DeployedWorker;
/** Connected and revoked by the revoke test alone. */
let revocable: DeployedWorker;

const cliIn = (project: DeployedWorker, ...argv: string[]) => bench.cli(argv, { cwd: project.dir });
const cli = (...argv: string[]) => cliIn(worker, ...argv);

let connection: Promise<void> | undefined;
const connected = () =>
  (connection ??= (async () => {
    const { page } = await bench.connect(worker.workerId);
    expect(page.status, page.text).toBe(200);
  })());

beforeAll(async () => {
  bench = await startBench({ now: clock.now });
  provider = await startProvider({ redirectUris: [`${bench.server.url}/workers/oauth/callback`], accessTokenTtl: TTL_S, clientSecret: "inspect-secret-canary-2d4e" });
  // The token endpoint is the provider's own: its RFC 8414 metadata names its revocation endpoint.
  const secrets = { GITHUB_CLIENT_ID: provider.clientId, GITHUB_CLIENT_SECRET: provider.clientSecret };
  worker = await bench.deploy("inspect", oauthWorkerSource(provider), secrets);
  unconnected = await bench.deploy("inspect-unconnected", oauthWorkerSource(provider), secrets);
  revocable = await bench.deploy("inspect-revocable", oauthWorkerSource(provider), secrets);
}, 240_000);

afterAll(async () => {
  await bench?.stop();
  await provider?.stop();
});

describe("before connecting", () => {
  it("status, capabilities list and token say not connected, and how to connect", async () => {
    const status = ok(await cliIn(unconnected, "workers", "oauth", "status"));
    expect(status.stdout).toBe(renderTable(STATUS_HEADERS, [["githubAuth", "not connected", "-", "-", "-", "-"]]));
    expect(status.stderr).toBe("hint: run `ntn workers oauth start githubAuth` to connect githubAuth.\n");

    const capabilities = ok(await cliIn(unconnected, "workers", "capabilities", "list"));
    expect(capabilities.stdout).toBe(
      renderTable(
        ["TYPE", "KEY", "CONNECTION"],
        [
          ["oauth", "githubAuth", "not_connected"],
          ["tool", "getGitHubRepos", ""],
          ["tool", "tokenTwice", ""],
        ],
      ),
    );

    const token = failed(await cliIn(unconnected, "workers", "oauth", "token", "githubAuth"));
    expect(token.stdout).toBe("");
    expect(token.stderr).toBe('error: Connection "githubAuth" is not connected.\n  hint: Run: ntn workers oauth start githubAuth\n');
  });
});

describe("a connected capability", () => {
  it("oauth token shows the valid token: labelled by default, alone with --plain, with expiresAt in --json", async () => {
    await connected();
    const api = (await bench.token(worker.workerId)).body as { accessToken: string; expiresAt: string };
    expect(await provider.resourceStatus(api.accessToken)).toBe(200);

    const plain = ok(await cli("workers", "oauth", "token", "githubAuth", "--plain"));
    expect(plain.stdout).toBe(`${api.accessToken}\n`);
    const json = ok(await cli("workers", "oauth", "token", "githubAuth", "--json"));
    expect(JSON.parse(json.stdout)).toEqual({ accessToken: api.accessToken, expiresAt: api.expiresAt });
    const labelled = ok(await cli("workers", "oauth", "token", "githubAuth"));
    expect(labelled.stdout).toBe(`ACCESS TOKEN  ${api.accessToken}\nEXPIRES AT    ${api.expiresAt}\n`);
    for (const result of [plain, json, labelled]) expect(result.stderr).toBe("");
    expect((await bench.status(worker.workerId)).expiresAt).toBe(api.expiresAt);
  });

  it("oauth status shows connected, expiry, last and next refresh and the last error, as a table and as --json", async () => {
    await connected();
    const fresh = await bench.status(worker.workerId);
    expect(fresh).toMatchObject({ status: "connected", lastRefreshAt: null, lastError: null });
    // Into the refresh margin, so the server refreshes once and every column has a value.
    clock.advance(Math.max(0, Date.parse(fresh.expiresAt) - (TTL_S * 1000) / 2 - clock.now() + 300));
    expect((await bench.token(worker.workerId)).status).toBe(200);

    const json = ok(await cli("workers", "oauth", "status", "--json"));
    const [connection] = JSON.parse(json.stdout);
    expect(connection).toEqual({
      key: "githubAuth",
      name: "github-oauth",
      envKey: SEED_TOKEN_VAR,
      status: "connected",
      expiresAt: expect.any(String),
      expirySource: "provider",
      hasRefreshToken: true,
      connectedAt: fresh.connectedAt,
      lastRefreshAt: expect.any(String),
      nextRefreshAt: expect.any(String),
      lastError: null,
      lastErrorAt: null,
      defaultRefreshIntervalMs: 3_600_000,
    });
    const [last, next, expires] = [connection.lastRefreshAt, connection.nextRefreshAt, connection.expiresAt].map(Date.parse) as [number, number, number];
    expect(last).toBeGreaterThan(Date.parse(fresh.connectedAt));
    expect(expires - last).toBe(TTL_S * 1000);
    // Renewed before expiry by the margin: min(5 minutes, half the lifetime).
    expect(expires - next).toBe(Math.min(300_000, (TTL_S * 1000) / 2));

    const table = ok(await cli("workers", "oauth", "status"));
    expect(table.stdout).toBe(renderTable(STATUS_HEADERS, [["githubAuth", "connected", connection.expiresAt, connection.lastRefreshAt, connection.nextRefreshAt, "-"]]));
    expect(table.stderr).toBe("");
    const one = ok(await cli("workers", "oauth", "status", "githubAuth", "--json"));
    expect(JSON.parse(one.stdout)).toEqual([connection]);

    const unknown = failed(await cli("workers", "oauth", "status", "nope"));
    expect(unknown.stderr).toContain('error: The worker has no OAuth capability "nope".');
  });

  it("capabilities list shows the connection status beside the OAuth capability", async () => {
    await connected();
    const status = await bench.status(worker.workerId);
    const table = ok(await cli("workers", "capabilities", "list"));
    expect(table.stdout).toBe(
      renderTable(
        ["TYPE", "KEY", "CONNECTION"],
        [
          ["oauth", "githubAuth", `connected (expires ${status.expiresAt})`],
          ["tool", "getGitHubRepos", ""],
          ["tool", "tokenTwice", ""],
        ],
      ),
    );
    const json = JSON.parse(ok(await cli("workers", "capabilities", "list", "--json")).stdout);
    expect(json.find((c: { key: string }) => c.key === "githubAuth")).toMatchObject({ _tag: "oauth", connection: { status: "connected", expiresAt: status.expiresAt } });
    expect(json.find((c: { key: string }) => c.key === "getGitHubRepos").connection).toBeUndefined();
  });
});

describe("oauth revoke", () => {
  it("asks first: without a terminal and without --yes it exits 1 and revokes nothing", async () => {
    await connected();
    const revocations = provider.revocations;
    const result = failed(await cli("workers", "oauth", "revoke", "githubAuth"), 1);
    expect(result.stderr).toContain("Use --yes to skip the confirmation prompt.");
    expect(provider.revocations).toBe(revocations);
    expect(await bench.status(worker.workerId)).toMatchObject({ status: "connected" });
  });

  it("--yes revokes at the provider's RFC 7009 endpoint and deletes the stored tokens; afterwards oauth token says not connected", async () => {
    const { page } = await bench.connect(revocable.workerId);
    expect(page.status, page.text).toBe(200);
    const before = (await bench.token(revocable.workerId)).body.accessToken as string;
    expect(await provider.resourceStatus(before)).toBe(200);
    const revocations = provider.revocations;

    const result = ok(await cliIn(revocable, "workers", "oauth", "revoke", "githubAuth", "--yes"));
    expect(result.stdout).toBe("");
    expect(result.stderr).toBe("✔ Revoked githubAuth at the provider and deleted its tokens\n");
    expect(provider.revocations).toBe(revocations + 1);
    // The provider dropped the grant: the access token handed out before no longer works.
    expect(await provider.resourceStatus(before)).toBe(401);

    expect(await bench.status(revocable.workerId)).toMatchObject({ status: "not_connected", expiresAt: null, hasRefreshToken: false, lastRefreshAt: null });
    const token = failed(await cliIn(revocable, "workers", "oauth", "token", "githubAuth"));
    expect(token.stderr).toBe('error: Connection "githubAuth" is not connected.\n  hint: Run: ntn workers oauth start githubAuth\n');
    const capabilities = ok(await cliIn(revocable, "workers", "capabilities", "list"));
    expect(capabilities.stdout).toMatch(/^oauth +githubAuth +not_connected$/m);

    const again = failed(await cliIn(revocable, "workers", "oauth", "revoke", "githubAuth", "--yes"));
    expect(again.stderr).toBe('error: Connection "githubAuth" is not connected.\n  hint: Nothing to revoke.\n');
    expect(provider.revocations).toBe(revocations + 1);
  });
});
