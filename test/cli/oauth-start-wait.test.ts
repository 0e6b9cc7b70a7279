/**
 * Issue 13, fix 8: `ntn workers oauth start` says which redirect URL the provider must have before
 * it waits, takes --timeout as a duration like the server's flags, and refuses garbage (exit 2).
 */
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliEnv, fixtureDeps, PROBE_SOURCE, workerIdOf, writeProject } from "../build-run/fixtures.js";
import { ntnBinary } from "../helpers/run-ntn.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { tempDir } from "../helpers/tmp.js";

describe("ntn workers oauth start --timeout", () => {
  let server: TestServer;
  let tmp: { dir: string; cleanup(): void };
  let dir: string;
  let env: Record<string, string | undefined>;

  beforeAll(async () => {
    server = await startTestServer();
    tmp = tempDir("wy-oauth-wait-");
    const deps = fixtureDeps();
    dir = writeProject(path.join(tmp.dir, "w"), deps, PROBE_SOURCE);
    // A browser that opens nothing: the provider never comes back.
    env = cliEnv(server, path.join(tmp.dir, "home"), { BROWSER: "true" });
    expect((await ntnBinary(["workers", "deploy", "--name", "wait"], { cwd: dir, env, timeoutMs: 180_000 })).code).toBe(0);
    const set = await server.call("UpsertSecrets", { workerId: workerIdOf(dir), secrets: [{ key: "DEMO_CLIENT_ID", value: "cid" }, { key: "DEMO_CLIENT_SECRET", value: "csec" }] });
    expect(set.status).toBe(200);
  });
  afterAll(async () => {
    await server?.stop();
    tmp?.cleanup();
  });

  it("names the redirect URL to register before it waits, and gives up after a duration such as 2s", async () => {
    const result = await ntnBinary(["workers", "oauth", "start", "demoAuth", "--timeout", "2s"], { cwd: dir, env });
    expect(result.code).toBe(5);
    const waiting = result.stderr.indexOf("Waiting for the authorization");
    const named = result.stderr.indexOf(`The provider must have this redirect URL registered: ${server.url}/workers/oauth/callback`);
    expect(named).toBeGreaterThan(-1);
    expect(named).toBeLessThan(waiting);
    expect(result.stderr).toMatch(/^error: Timed out after 2 seconds waiting for the authorization of demoAuth\.$/m);
  });

  it.each(["abc", "-5s", "0"])("refuses --timeout %s as a usage error (exit 2), before starting a flow", async (value) => {
    const result = await ntnBinary(["workers", "oauth", "start", "demoAuth", "--timeout", value], { cwd: dir, env });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/^error: --timeout must be a duration such as 90s, 5m or 300 \(seconds\); got /m);
    expect(result.stderr).not.toContain("Opening browser");
  });
});
