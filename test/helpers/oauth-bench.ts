/**
 * What the OAuth tests share: a Workyard server, worker projects made from the committed fixture
 * (test/fixtures/worker), workers deployed with the real CLI from the seed's source (its
 * endpoints pointed at a test provider or a quirk proxy), and connections made over HTTP.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { expect } from "vitest";
import type { ServerOptions } from "../../packages/server/src/main.js";
import { fixtureProject } from "./fixture-worker.js";
import { authorizeOverHttp, openPage } from "./http-browser.js";
import { ROOT } from "./paths.js";
import { baseEnv, failed, ntn, ok, type NtnResult } from "./run-ntn.js";

export { failed, ok };
import { seedWorkerSource } from "./seed-worker.js";
import { startTestServer, type TestServer } from "./start-server.js";
import { tempDir } from "./tmp.js";

/** Our ntn opens the authorization URL in headless Chromium, which approves (or denies) it. */
export const BROWSER = `node ${path.join(ROOT, "test/helpers/browser-approve.mjs")} %s`;

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A short, stable fingerprint of a token, for comparing tokens a tool saw without returning them. */
export function fingerprint(token: string): string {
  return crypto.createHash("sha256").update(token).digest("hex").slice(0, 16);
}

export interface WorkerEndpoints {
  authorizationEndpoint: string;
  tokenEndpoint: string;
  resourceUrl: string;
}

/**
 * The seed's worker (SPEC section 1): `githubAuth` named github-oauth, reading GITHUB_CLIENT_ID and
 * GITHUB_CLIENT_SECRET, and getGitHubRepos; plus, for the run tests, `tokenTwice`, which reads
 * accessToken() at each of `waitsMs` (cumulative pauses) and reports, per read, the token's
 * fingerprint and the resource API's answer: never the token itself.
 */
export function oauthWorkerSource(endpoints: WorkerEndpoints, options: { accessTokenExpireMs?: number } = {}): string {
  return seedWorkerSource(endpoints, {
    ...options,
    imports: 'import { createHash } from "node:crypto";\n',
    moreTools: `
worker.tool("tokenTwice", {
  title: "Token over time",
  description: "Reads the access token at several moments of one run",
  schema: j.object({ waitsMs: j.array(j.number()) }),
  execute: async ({ waitsMs }) => {
    const reads = [];
    for (const wait of [0, ...waitsMs]) {
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      const token = await githubAuth.accessToken();
      const response = await fetch(${JSON.stringify(endpoints.resourceUrl)}, { headers: { Authorization: \`Bearer \${token}\` } });
      await response.text();
      reads.push({ fingerprint: createHash("sha256").update(token).digest("hex").slice(0, 16), status: response.status });
    }
    console.log("read the token " + reads.length + " times");
    return { reads };
  },
});
`,
  });
}

export interface DeployedWorker {
  name: string;
  workerId: string;
  dir: string;
}

export interface OAuthBench {
  server: TestServer;
  root: string;
  /** The CLI's environment: NOTION_* pointing at the server, a fresh home, BROWSER, WY_BROWSER_LOG. */
  env: Record<string, string>;
  browserLog: string;
  cli(argv: string[], options?: { cwd?: string; env?: Record<string, string | undefined>; timeoutMs?: number }): Promise<NtnResult>;
  /**
   * A worker project in `<root>/<name>` with `source` as src/index.ts, deployed with `ntn workers deploy`
   * (`env` overrides the CLI's environment: another workspace's token, say).
   */
  deploy(name: string, source: string, secrets?: Record<string, string>, options?: { env?: Record<string, string> }): Promise<DeployedWorker>;
  setSecrets(workerId: string, secrets: Record<string, string>): Promise<void>;
  /** StartOauth, the provider's pages over HTTP, and the callback page. */
  connect(
    workerId: string,
    options?: { key?: string; action?: "approve" | "deny" },
  ): Promise<{ state: string; redirectUrl: string; callbackUrl: string; page: { status: number; html: string; text: string } }>;
  status(workerId: string, key?: string): Promise<any>;
  token(workerId: string, key?: string): Promise<{ status: number; body: any }>;
  stop(): Promise<void>;
}

/** Starts a server (options go to startServer) and a folder for the file's worker projects. */
export async function startBench(serverOptions: ServerOptions = {}): Promise<OAuthBench> {
  const tmp = tempDir("wy-oauth-");
  const server = await startTestServer(serverOptions);
  const browserLog = path.join(tmp.dir, "browser.log");
  fs.writeFileSync(browserLog, "");
  const env = {
    ...baseEnv(path.join(tmp.dir, "home")),
    NOTION_API_BASE_URL: server.url,
    NOTION_API_TOKEN: server.adminToken,
    NOTION_WORKSPACE_ID: server.workspaceId,
    BROWSER,
    WY_BROWSER_LOG: browserLog,
  };
  const cli: OAuthBench["cli"] = (argv, options = {}) =>
    ntn(argv, { cwd: options.cwd ?? tmp.dir, env: { ...env, ...options.env }, timeoutMs: options.timeoutMs ?? 120_000 });

  const setSecrets: OAuthBench["setSecrets"] = async (workerId, secrets) => {
    const answer = await server.call("UpsertSecrets", { workerId, secrets: Object.entries(secrets).map(([key, value]) => ({ key, value })) });
    expect(answer.status, JSON.stringify(answer.body)).toBe(200);
  };

  return {
    server,
    root: tmp.dir,
    env,
    browserLog,
    cli,
    async deploy(name, source, secrets, options = {}) {
      const dir = fixtureProject(path.join(tmp.dir, name), source);
      ok(await cli(["workers", "deploy", "--name", name], { cwd: dir, ...(options.env ? { env: options.env } : {}) }));
      const workerId = (JSON.parse(fs.readFileSync(path.join(dir, "workers.json"), "utf8")) as { workerId: string }).workerId;
      if (secrets) await setSecrets(workerId, secrets);
      return { name, workerId, dir };
    },
    setSecrets,
    async connect(workerId, options = {}) {
      const started = await server.call("StartOauth", { workerId, oauthCapabilityKey: options.key ?? "githubAuth" });
      expect(started.status, JSON.stringify(started.body)).toBe(200);
      const outcome = await authorizeOverHttp(started.body.authorizationUrl, {
        callbackPrefix: `${server.url}/workers/oauth/callback`,
        action: options.action ?? "approve",
      });
      expect(outcome.callbackUrl, JSON.stringify(outcome.providerPage)).toBeTruthy();
      const page = await openPage(outcome.callbackUrl!);
      return { state: started.body.state, redirectUrl: started.body.redirectUrl, callbackUrl: outcome.callbackUrl!, page };
    },
    async status(workerId, key = "githubAuth") {
      const answer = await server.call("GetOauthStatus", { workerId, oauthCapabilityKey: key });
      expect(answer.status, JSON.stringify(answer.body)).toBe(200);
      return answer.body.connections[0];
    },
    token: (workerId, key = "githubAuth") => server.call("GetOauthToken", { workerId, oauthCapabilityKey: key }),
    async stop() {
      await server.stop();
      tmp.cleanup();
    },
  };
}

/** Fails if any canary (a secret value) shows up in any of the named places; names the place, never the value. */
export function expectNoCanary(places: Record<string, string>, canaries: Record<string, string | undefined>): void {
  for (const [canaryName, canary] of Object.entries(canaries)) {
    if (!canary) continue;
    for (const [placeName, text] of Object.entries(places)) {
      expect(text.includes(canary), `${canaryName} appears in ${placeName}`).toBe(false);
    }
  }
}
