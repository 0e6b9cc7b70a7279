import fs from "node:fs";
import path from "node:path";
import { expect } from "vitest";
import { BROWSER } from "./oauth-bench.js";
import { baseEnv, ntnBinary, ok } from "./run-ntn.js";
import { writeSeedWorker } from "./seed-worker.js";
import { startProvider, type TestProvider } from "./start-provider.js";
import { startTestServer, type TestServer } from "./start-server.js";
import { tempDir } from "./tmp.js";

/*
 * The acceptance story's stage (SPEC section 1): a server, a provider whose tokens expire after
 * TOKEN_TTL_S, and the seed's worker project. One file per CLI (acceptance*.test.ts), so the two
 * stories, each with a real wait for a token to expire, run side by side.
 */

/**
 * Short-lived access tokens, so the test sees them expire and get refreshed; long enough that the
 * steps between the connection and the first runs (pull, a local bundle and run, a remote run)
 * usually stay out of the refresh margin (half the lifetime). The stories check "no refresh yet"
 * only when they did: on a loaded machine a refresh there is right.
 */
export const TOKEN_TTL_S = 10;

export interface Story {
  server: TestServer;
  provider: TestProvider;
  dir: string;
  env: Record<string, string>;
  browserLog: string;
  stop(): Promise<void>;
}

export async function setUp(): Promise<Story> {
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
  ok(await ntnBinary(["workers", "new", "github-worker", "--no-git"], { cwd: tmp.dir, env, timeoutMs: 180_000 }));
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
export function expectNoLeak(story: Story, outputs: string[], accessTokens: string[]): void {
  const canaries = [story.provider.clientSecret, ...accessTokens];
  const places = [story.server.logs(), fs.readFileSync(story.browserLog, "utf8"), ...outputs];
  for (const canary of canaries) for (const place of places) expect(place).not.toContain(canary);
}

