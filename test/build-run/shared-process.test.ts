/**
 * Issue 14: a warm worker process takes several runs at once (runsPerProcess), which is what makes
 * many concurrent runs cheap. What must stay true: each run's output is its own; a run past its
 * time limit stops the process, and a run that shared it ends with a message that says so; a
 * process whose event loop seems stuck (silent for a second with a run under way) takes no more.
 */
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ntn } from "../helpers/run-ntn.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { tempDir } from "../helpers/tmp.js";
import { cliEnv, fixtureDeps, workerIdOf, writeProject } from "./fixtures.js";

const SOURCE = `import { Worker } from "@notionhq/workers";
import { j } from "@notionhq/workers/schema-builder";

// Which process ran a run (pids repeat across PID namespaces).
const processId = Math.random().toString(36).slice(2);
const worker = new Worker();
export default worker;
worker.tool("wait", {
  title: "wait",
  description: "logs, waits, logs again, and says which process ran it",
  schema: j.object({ tag: j.string(), ms: j.number() }),
  execute: async ({ tag, ms }) => {
    console.log("start " + tag);
    await new Promise((resolve) => setTimeout(resolve, ms));
    console.error("end " + tag);
    return { tag, pid: processId };
  },
});
worker.tool("spin", {
  title: "spin",
  description: "never gives its event loop back",
  schema: j.object({}),
  execute: async () => {
    console.log("spinning");
    for (;;) {}
  },
});
`;

describe("runs sharing a warm worker process", () => {
  let server: TestServer;
  let tmp: { dir: string; cleanup(): void };
  let workerId: string;

  const run = (capabilityKey: string, args: unknown) => server.call("RunCapability", { workerId, capabilityKey, args });
  const logsOf = async (runId: string) => (await server.call("GetRunLogs", { workerId, runId })).body.logs as string;

  beforeAll(async () => {
    server = await startTestServer({ runTimeout: "3s", runsPerProcess: 16 });
    tmp = tempDir("wy-shared-process-");
    const dir = writeProject(path.join(tmp.dir, "w"), fixtureDeps(), SOURCE);
    const deployed = await ntn(["workers", "deploy", "--name", "shared"], { cwd: dir, env: cliEnv(server, path.join(tmp.dir, "home")), timeoutMs: 180_000 });
    expect(deployed.code, deployed.stderr).toBe(0);
    workerId = workerIdOf(dir);
  });
  afterAll(async () => {
    await server?.stop();
    tmp?.cleanup();
  });

  it("runs at once in one process, each with its own output and result", async () => {
    // A first run warms a process; the six that follow come together while it is awake.
    expect((await run("wait", { tag: "warm", ms: 1 })).status).toBe(200);
    const tags = ["a", "b", "c", "d", "e", "f"];
    const answers = await Promise.all(tags.map((tag, i) => run("wait", { tag, ms: 400 + i * 20 })));
    expect(answers.map((a) => a.status)).toEqual(tags.map(() => 200));
    expect(answers.map((a) => a.body.result.tag)).toEqual(tags);
    // All in the warm process, side by side (one at a time, they took four processes).
    expect(new Set(answers.map((a) => a.body.result.pid)).size).toBe(1);
    for (const [i, tag] of tags.entries()) {
      const logs = await logsOf(answers[i]!.body.runId);
      expect(logs).toContain(`start ${tag}`);
      expect(logs).toContain(`end ${tag}`);
      for (const other of tags.filter((t) => t !== tag)) expect(logs).not.toContain(` ${other}\n`);
    }
  });

  it("a run past its time limit stops its process; a run beside it ends saying why; the next run gets a new process", async () => {
    const before = (await run("wait", { tag: "before", ms: 1 })).body.result.pid as string;
    const spinning = run("spin", {});
    // Within the second a spinning process may still look busy rather than stuck: this run joins it.
    await new Promise((resolve) => setTimeout(resolve, 100));
    const beside = run("wait", { tag: "beside", ms: 10 });
    const [spun, joined] = await Promise.all([spinning, beside]);
    expect(spun.status).toBe(422);
    expect(spun.body.message).toMatch(/exceeded its time limit of 3s/);
    expect(joined.status).toBe(422);
    // Held by the spinning run: stopped at that run's limit, or at its own if that passed before
    // the process was stopped (half a second after the first limit, with no turn of its loop).
    expect(joined.body.message).toMatch(/stopped at another run's time limit|exceeded its time limit of 3s/);
    const after = await run("wait", { tag: "after", ms: 1 });
    expect(after.status).toBe(200);
    expect(after.body.result.pid).not.toBe(before);
  });

  it("a run that quietly awaits for longer than a second still shares its process", async () => {
    const long = run("wait", { tag: "long", ms: 2500 });
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const short = await run("wait", { tag: "short", ms: 10 });
    expect(short.status).toBe(200);
    const longAnswer = await long;
    expect(longAnswer.status).toBe(200);
    expect(short.body.result.pid).toBe(longAnswer.body.result.pid);
  });

  it("a process silent for a second with a run under way takes no more runs", async () => {
    const spinning = run("spin", {});
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const answer = await run("wait", { tag: "elsewhere", ms: 10 });
    expect(answer.status).toBe(200);
    expect(answer.body.result.tag).toBe("elsewhere");
    expect((await spinning).status).toBe(422);
  });
});
