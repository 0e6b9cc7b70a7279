/**
 * Issue 13, fix 4: a worker whose module throws when a run (or a manifest read) loads it gets a
 * 4xx `worker_load_failed` with its own message, and the run is recorded with its stack, never a
 * 500 that calls it a bug in Workyard.
 */
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ntn } from "../helpers/run-ntn.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { tempDir } from "../helpers/tmp.js";
import { cliEnv, lineOf, fixtureDeps, workerIdOf, writeProject } from "./fixtures.js";

const SOURCE = `import { Worker } from "@notionhq/workers";
import { j } from "@notionhq/workers/schema-builder";

if (process.env.BOOM === "1") {
  throw new Error("cannot start: BOOM is set");
}
const worker = new Worker();
export default worker;
worker.tool("ping", { title: "ping", description: "pong", schema: j.object({}), execute: async () => "pong" });
`;

describe("a worker that fails to load when a run starts it", () => {
  let server: TestServer;
  let tmp: { dir: string; cleanup(): void };
  let dir: string;
  let env: Record<string, string | undefined>;

  beforeAll(async () => {
    server = await startTestServer();
    tmp = tempDir("wy-load-failure-");
    const deps = fixtureDeps();
    dir = writeProject(path.join(tmp.dir, "w"), deps, SOURCE);
    env = cliEnv(server, path.join(tmp.dir, "home"));
    const deployed = await ntn(["workers", "deploy", "--name", "boom"], { cwd: dir, env, timeoutMs: 180_000 });
    expect(deployed.code, deployed.stderr).toBe(0);
    // The new value makes the live deployment throw at load: env set says so, and keeps it.
    const set = await ntn(["workers", "env", "set", "BOOM=1"], { cwd: dir, env });
    expect(set.code, set.stderr).toBe(0);
    expect(set.stderr).toMatch(/failed to load with the new values \(cannot start: BOOM is set\)/);
  });
  afterAll(async () => {
    await server?.stop();
    tmp?.cleanup();
  });

  it("answers 422 worker_load_failed with the worker's message, records the run with its stack", async () => {
    const answer = await server.call("RunCapability", { workerId: workerIdOf(dir), capabilityKey: "ping", args: {} });
    expect(answer.status).toBe(422);
    expect(answer.body).toMatchObject({ code: "worker_load_failed", message: "The worker failed to load: cannot start: BOOM is set" });
    expect(answer.body.hint).toMatch(/^Its stack is in the run's logs: ntn workers runs logs \S+\. Fix it and deploy again\.$/);
    const runId = /runs logs (\S+)\./.exec(answer.body.hint)![1]!;
    const logs = await server.call("GetRunLogs", { workerId: workerIdOf(dir), runId });
    expect(logs.body.run).toMatchObject({ status: "failed", exitCode: 1, error: "The worker failed to load: cannot start: BOOM is set" });
    expect(logs.body.logs).toContain(`/src/index.ts:${lineOf(SOURCE, "cannot start")}:`);
    expect(server.logs()).not.toMatch(/request failed/);
  });

  it("our CLI prints it as the worker's error, with the way to its stack (exit 5)", async () => {
    const result = await ntn(["workers", "exec", "ping"], { cwd: dir, env });
    expect(result.code).toBe(5);
    expect(result.stderr).toMatch(/^error: The worker failed to load: cannot start: BOOM is set$/m);
    expect(result.stderr).toMatch(/^ {2}hint: Its stack is in the run's logs: ntn workers runs logs \S+/m);
    expect(result.stderr).not.toMatch(/bug in Workyard/);
  });

  it("a manifest read that loads it (a token request) answers the same error, not a 500", async () => {
    const answer = await server.call("GetOauthToken", { workerId: workerIdOf(dir), oauthCapabilityKey: "anything" });
    expect(answer.status).toBe(422);
    expect(answer.body.code).toBe("worker_load_failed");
  });
});
