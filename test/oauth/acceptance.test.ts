/**
 * The acceptance story of SPEC section 1, steps 1 to 9, as written: a real Workyard server, a real
 * authorization server (oidc-provider) with a resource API that accepts only its tokens, headless
 * Chromium approving the consent page through BROWSER, and the real CLIs as subprocesses.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BROWSER, sleep } from "../helpers/oauth-bench.js";
import { baseEnv, ntn, officialNtn, ok, type NtnResult } from "../helpers/run-ntn.js";
import { SEED_TOKEN_VAR, writeSeedWorker } from "../helpers/seed-worker.js";
import { startProvider, type TestProvider } from "../helpers/start-provider.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { tempDir } from "../helpers/tmp.js";

/** Short-lived access tokens, so the test sees them expire and get refreshed. */
const TOKEN_TTL_S = 6;

interface Story {
  server: TestServer;
  provider: TestProvider;
  dir: string;
  env: Record<string, string>;
  browserLog: string;
  stop(): Promise<void>;
}

async function setUp(): Promise<Story> {
  const tmp = tempDir("wy-acceptance-");
  const server = await startTestServer({});
  const provider = await startProvider({ redirectUris: [`${server.url}/workers/oauth/callback`], accessTokenTtl: TOKEN_TTL_S });
  const browserLog = path.join(tmp.dir, "browser.log");
  const env = {
    ...baseEnv(path.join(tmp.dir, "home")),
    NOTION_API_BASE_URL: server.url,
    NOTION_API_TOKEN: server.adminToken,
    NOTION_WORKSPACE_ID: server.workspaceId,
    BROWSER,
    WY_BROWSER_LOG: browserLog,
  };
  // A worker project: the scaffold (with @notionhq/workers and @notionhq/client from npm) and the seed's src/index.ts.
  ok(await ntn(["workers", "new", "github-worker", "--no-git"], { cwd: tmp.dir, env, timeoutMs: 180_000 }));
  const dir = path.join(tmp.dir, "github-worker");
  writeSeedWorker(dir, provider);
  return {
    server,
    provider,
    dir,
    env,
    browserLog,
    async stop() {
      await provider.stop();
      await server.stop();
      tmp.cleanup();
    },
  };
}

/** Secrets that must never show up anywhere but where they belong. */
function expectNoLeak(story: Story, outputs: string[], accessTokens: string[]): void {
  const canaries = [story.provider.clientSecret, ...accessTokens];
  const places = [story.server.logs(), fs.readFileSync(story.browserLog, "utf8"), ...outputs];
  for (const canary of canaries) for (const place of places) expect(place).not.toContain(canary);
}

describe("the acceptance story with our ntn", () => {
  let story: Story;
  beforeAll(async () => {
    story = await setUp();
  }, 240_000);
  afterAll(async () => story?.stop());

  it("goes from deploy to a refreshed token on the server and locally", async () => {
    const { dir, env, provider, server } = story;
    const run = (...argv: string[]) => ntn(argv, { cwd: dir, env, timeoutMs: 120_000 });
    const outputs: string[] = [];
    const record = (r: NtnResult) => (outputs.push(r.stderr), r);

    // 1. The first deploy registers the worker; its client id and secret are empty: fine.
    const first = record(ok(await run("workers", "deploy", "--name", "github-worker")));
    expect(first.stderr).toContain("✔ Worker created");
    expect(first.stderr).toMatch(/\+ oauth +githubAuth/);

    // 2. The redirect URL, alone on stdout.
    const redirect = ok(await run("workers", "oauth", "show-redirect-url"));
    expect(redirect.stdout).toBe(`${server.url}/workers/oauth/callback\n`);

    // Before the credentials exist, oauth start names the secrets to set.
    const early = await run("workers", "oauth", "start", "githubAuth");
    expect(early.code).toBe(5);
    expect(early.stderr).toContain("GITHUB_CLIENT_ID");
    expect(early.stderr).toContain("GITHUB_CLIENT_SECRET");

    // 3. (The client is registered at the provider with that redirect URL.) 4. The credentials.
    record(ok(await run("workers", "env", "set", `GITHUB_CLIENT_ID=${provider.clientId}`, `GITHUB_CLIENT_SECRET=${provider.clientSecret}`)));

    // 5. Deploy again: harmless.
    expect(record(ok(await run("workers", "deploy"))).stderr).toContain("✔ Worker updated");

    // 6. oauth start opens the page (Chromium approves), waits, and reports success.
    const start = record(ok(await run("workers", "oauth", "start", "githubAuth")));
    expect(start.stderr).toContain("✔ Connected githubAuth");
    expect(fs.readFileSync(story.browserLog, "utf8")).toContain("is connected");

    // 7. env pull writes every secret and a fresh access token.
    record(ok(await run("workers", "env", "pull")));
    const dotenv = fs.readFileSync(path.join(dir, ".env"), "utf8");
    expect(dotenv).toContain(`GITHUB_CLIENT_ID=${provider.clientId}\n`);
    const token1 = new RegExp(`^${SEED_TOKEN_VAR}=(.+)$`, "m").exec(dotenv)?.[1];
    expect(token1).toBeTruthy();
    expect(dotenv).toMatch(new RegExp(`^# ${SEED_TOKEN_VAR} expires \\d{4}-`, "m"));

    // 8. The tool succeeds against the resource API locally and on the server.
    const local = record(ok(await run("workers", "exec", "getGitHubRepos", "--local")));
    expect(JSON.parse(local.stdout)).toEqual([expect.objectContaining({ name: "repo-one" }), expect.objectContaining({ name: "repo-two" })]);
    const remote = record(ok(await run("workers", "exec", "getGitHubRepos")));
    expect(JSON.parse(remote.stdout)).toEqual(JSON.parse(local.stdout));
    expect(provider.grants.success.refresh_token ?? 0).toBe(0);

    // 9. After the access token expires, pull and both runs still succeed: the server refreshed it.
    await sleep(TOKEN_TTL_S * 1000 + 1000);
    const stale = record(ok(await run("workers", "exec", "getGitHubRepos", "--local")));
    expect(stale.stderr).toContain("Run `ntn workers env pull` for a fresh token.");
    record(ok(await run("workers", "env", "pull", "--yes")));
    const token2 = new RegExp(`^${SEED_TOKEN_VAR}=(.+)$`, "m").exec(fs.readFileSync(path.join(dir, ".env"), "utf8"))?.[1];
    expect(token2).toBeTruthy();
    expect(token2).not.toBe(token1);
    expect(provider.grants.success.refresh_token).toBe(1);
    const local2 = record(ok(await run("workers", "exec", "getGitHubRepos", "--local")));
    expect(JSON.parse(local2.stdout)[0].name).toBe("repo-one");
    const remote2 = record(ok(await run("workers", "exec", "getGitHubRepos")));
    expect(JSON.parse(remote2.stdout)[0].name).toBe("repo-one");

    const status = ok(await run("workers", "oauth", "status", "--json"));
    const [connection] = JSON.parse(status.stdout);
    expect(connection).toMatchObject({ key: "githubAuth", status: "connected", hasRefreshToken: true, lastError: null });
    expect(connection.lastRefreshAt).not.toBeNull();

    expectNoLeak(story, outputs, [token1!, token2!]);
  });
});

describe("the acceptance story with the official ntn 0.4.0", () => {
  let story: Story;
  beforeAll(async () => {
    story = await setUp();
  }, 240_000);
  afterAll(async () => story?.stop());

  it("goes from deploy to a refreshed token on the server (its exec --local needs Node 22 and tsx)", async () => {
    const { dir, env, provider, server } = story;
    const run = (...argv: string[]) => officialNtn(argv, { cwd: dir, env, timeoutMs: 120_000 });
    const outputs: string[] = [];
    const record = (r: NtnResult) => (outputs.push(r.stdout, r.stderr), r);

    // 1. Without a terminal the official CLI needs --name on the first deploy.
    expect(record(ok(await run("workers", "deploy", "--name", "github-worker"))).stderr).toContain("✔ Worker created");
    // 2. It computes the URL from NOTION_API_BASE_URL: the server's public URL gives the same.
    expect(ok(await run("workers", "oauth", "show-redirect-url")).stdout).toBe(`${server.url}/workers/oauth/callback\n`);
    // 4, 5.
    record(ok(await run("workers", "env", "set", `GITHUB_CLIENT_ID=${provider.clientId}`, `GITHUB_CLIENT_SECRET=${provider.clientSecret}`)));
    expect(record(ok(await run("workers", "deploy"))).stderr).toContain("✔ Worker updated");
    // 6. It opens the URL with xdg-open, which runs $BROWSER, and returns once that exits.
    record(ok(await run("workers", "oauth", "start", "githubAuth")));
    expect(fs.readFileSync(story.browserLog, "utf8")).toContain("is connected");
    const token = ok(await run("workers", "oauth", "token", "githubAuth", "--json"));
    const shown = JSON.parse(token.stdout) as { accessToken: string; expiresAt: string };
    expect(shown.accessToken.length).toBeGreaterThan(10);
    expect(Date.parse(shown.expiresAt)).toBeGreaterThan(Date.now());

    // 7. env pull.
    record(ok(await run("workers", "env", "pull")));
    const token1 = new RegExp(`^${SEED_TOKEN_VAR}=(.+)$`, "m").exec(fs.readFileSync(path.join(dir, ".env"), "utf8"))?.[1];
    expect(token1).toBe(shown.accessToken);
    // 8. On the server.
    const remote = record(ok(await run("workers", "exec", "getGitHubRepos")));
    expect(JSON.parse(remote.stdout)[0].name).toBe("repo-one");

    // 9. After expiry.
    await sleep(TOKEN_TTL_S * 1000 + 1000);
    record(ok(await run("workers", "env", "pull", "--yes")));
    const token2 = new RegExp(`^${SEED_TOKEN_VAR}=(.+)$`, "m").exec(fs.readFileSync(path.join(dir, ".env"), "utf8"))?.[1];
    expect(token2).toBeTruthy();
    expect(token2).not.toBe(token1);
    const remote2 = record(ok(await run("workers", "exec", "getGitHubRepos")));
    expect(JSON.parse(remote2.stdout)[0].name).toBe("repo-one");
    expect(provider.grants.success.refresh_token).toBe(1);

    // The official env push sends the token variable back: the server ignores it.
    record(ok(await run("workers", "env", "push", "--yes")));
    const listed = ok(await run("workers", "env", "list", "--plain"));
    expect(listed.stdout).not.toContain(SEED_TOKEN_VAR);

    expectNoLeak(story, outputs.filter((o) => !o.includes(SEED_TOKEN_VAR) && !o.includes('"accessToken"')), [token1!, token2!]);
  });
});
