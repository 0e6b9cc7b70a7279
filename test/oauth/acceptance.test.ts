/**
 * The acceptance story of SPEC section 1, steps 1 to 9, as written: a real Workyard server, a real
 * authorization server (oidc-provider) with a resource API that accepts only its tokens, headless
 * Chromium approving the consent page through BROWSER, and the real CLIs as subprocesses.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectNoLeak, setUp, TOKEN_TTL_S, type Story } from "../helpers/acceptance-story.js";
import { sleep } from "../helpers/oauth-bench.js";
import { ntnBinary, ok, type NtnResult } from "../helpers/run-ntn.js";
import { SEED_TOKEN_VAR } from "../helpers/seed-worker.js";

describe("the acceptance story with our ntn", () => {
  let story: Story;
  beforeAll(async () => {
    story = await setUp();
  }, 240_000);
  afterAll(async () => story?.stop());

  it("goes from deploy to a refreshed token on the server and locally", async () => {
    const { dir, env, provider, server } = story;
    const run = (...argv: string[]) => ntnBinary(argv, { cwd: dir, env, timeoutMs: 120_000 });
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
    // The access token was issued before this: its refresh margin (half its lifetime) starts at the latest now + TTL/2.
    const connectedAt = Date.now();
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
    // No refresh of a token outside its refresh margin (on a loaded machine the steps since the
    // connection can take longer than that; a refresh is then what should happen).
    const refreshedBefore = provider.grants.success.refresh_token ?? 0;
    if (Date.now() - connectedAt < (TOKEN_TTL_S * 1000) / 2) expect(refreshedBefore).toBe(0);

    // 9. After the access token expires, pull and both runs still succeed: the server refreshed it.
    // The token was issued before connectedAt: a second past its lifetime from then, it has expired.
    await sleep(connectedAt + TOKEN_TTL_S * 1000 + 1000 - Date.now());
    const stale = record(ok(await run("workers", "exec", "getGitHubRepos", "--local")));
    expect(stale.stderr).toContain("Run `ntn workers env pull` for a fresh token.");
    record(ok(await run("workers", "env", "pull", "--yes")));
    const token2 = new RegExp(`^${SEED_TOKEN_VAR}=(.+)$`, "m").exec(fs.readFileSync(path.join(dir, ".env"), "utf8"))?.[1];
    expect(token2).toBeTruthy();
    expect(token2).not.toBe(token1);
    expect(provider.grants.success.refresh_token).toBe(refreshedBefore + 1);
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

