/**
 * A worker deleted while one of its runs goes on: the run's record goes with the worker, which is
 * not an error for the operator to chase (it was logged as "recording a run failed", a foreign key
 * refused, at error level).
 */
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ntn } from "../helpers/run-ntn.js";
import { DIALECTS } from "../helpers/dialects.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { tempDir } from "../helpers/tmp.js";
import { cliEnv, fixtureDeps, workerIdOf, writeProject } from "./fixtures.js";

const SOURCE = `import { Worker } from "@notionhq/workers";
import { j } from "@notionhq/workers/schema-builder";
const worker = new Worker();
export default worker;
worker.tool("wait", {
  title: "wait",
  description: "waits, then answers",
  schema: j.object({ ms: j.number() }),
  execute: async ({ ms }) => {
    await new Promise((resolve) => setTimeout(resolve, ms));
    return "done";
  },
});
`;

describe.each(DIALECTS)("a worker deleted while its run goes on (%s)", (dialect) => {
  let server: TestServer;
  let tmp: { dir: string; cleanup(): void };

  beforeAll(async () => {
    server = await startTestServer({ dialect });
    tmp = tempDir("wy-delete-during-run-");
  });
  afterAll(async () => {
    await server?.stop();
    tmp?.cleanup();
  });

  const deploy = async (name: string) => {
    const dir = writeProject(path.join(tmp.dir, name), fixtureDeps(), SOURCE);
    const env = cliEnv(server, path.join(tmp.dir, "home"));
    const deployed = await ntn(["workers", "deploy", "--name", name], { cwd: dir, env, timeoutMs: 180_000 });
    expect(deployed.code, deployed.stderr).toBe(0);
    return { dir, env, workerId: workerIdOf(dir) };
  };
  const errorsLogged = () => server.logs().split("\n").filter((line) => /"level":(50|60)/.test(line));

  // A run is recorded whole when it ends within RECORD_RUNNING_AFTER_MS (200 ms), else as running
  // first and updated at its end.
  it.each([
    ["a short run, recorded whole at its end", 180, 0],
    ["a long run, recorded as running first", 1500, 500],
  ])("%s: no error is logged, and the worker is gone", async (label, ms, deleteAfterMs) => {
    const { dir, env, workerId } = await deploy(`doomed-${ms}`);
    // A warm process first, so the run under test starts at once.
    expect((await server.call("RunCapability", { workerId, capabilityKey: "wait", args: { ms: 1 } })).status).toBe(200);
    const running = server.call("RunCapability", { workerId, capabilityKey: "wait", args: { ms } });
    await new Promise((resolve) => setTimeout(resolve, deleteAfterMs));
    const deleted = await ntn(["workers", "delete", "--yes"], { cwd: dir, env });
    expect(deleted.code, `${label}: ${deleted.stderr}`).toBe(0);
    await running;
    // The journal commits within its interval; give it a few.
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(errorsLogged(), label).toEqual([]);
    expect((await server.call("GetWorker", { workerId })).status).toBe(404);
  });
});
