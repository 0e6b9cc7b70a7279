/**
 * Issue 13, fix 12: with --json an error is one JSON object on stderr, and stdout stays empty, in
 * every command group that has --json.
 */
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliEnv } from "../build-run/fixtures.js";
import { ntnBinary } from "../helpers/run-ntn.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { tempDir } from "../helpers/tmp.js";

describe("errors under --json", () => {
  let server: TestServer;
  let tmp: { dir: string; cleanup(): void };
  let env: Record<string, string | undefined>;

  beforeAll(async () => {
    server = await startTestServer();
    tmp = tempDir("wy-json-errors-");
    env = cliEnv(server, path.join(tmp.dir, "home"));
  });
  afterAll(async () => {
    await server?.stop();
    tmp?.cleanup();
  });

  const missing = "00000000-0000-0000-0000-000000000000";
  it.each([
    ["workers", ["workers", "get", missing, "--json"], "worker_not_found"],
    ["capabilities", ["workers", "capabilities", "list", missing, "--json"], "worker_not_found"],
    ["env", ["workers", "env", "list", missing, "--json"], "worker_not_found"],
    ["runs", ["workers", "runs", "list", missing, "--json"], "worker_not_found"],
    ["oauth", ["workers", "oauth", "status", "--worker-id", missing, "--json"], "worker_not_found"],
    ["tokens", ["tokens", "list", "--json"], "unauthorized"],
  ])("%s: the error is JSON on stderr, stdout is empty", async (_group, argv, code) => {
    const result = await ntnBinary(argv, { cwd: tmp.dir, env: code === "unauthorized" ? { ...env, NOTION_API_TOKEN: "not-a-token" } : env });
    expect(result.code).toBe(code === "unauthorized" ? 4 : 5);
    expect(result.stdout).toBe("");
    const lines = result.stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    const body = JSON.parse(lines[0]!) as { error: string; hint?: string; code?: string };
    expect(body.error).toEqual(expect.any(String));
    if (code !== "unauthorized") expect(body.code).toBe(code);
  });
});
