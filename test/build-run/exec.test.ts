import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ntn } from "../helpers/run-ntn.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { tempDir } from "../helpers/tmp.js";
import { cliEnv, echoResult, lineOf, fixtureDeps, PROBE_SOURCE, workerIdOf, writeProject } from "./fixtures.js";

describe("running a deployed worker on the server with our ntn", () => {
  let server: TestServer;
  let tmp: { dir: string; cleanup(): void };
  let project: string;
  let env: Record<string, string | undefined>;
  const run = (argv: string[], input?: string) => ntn(argv, { cwd: project, env, ...(input === undefined ? {} : { input }) });

  beforeAll(async () => {
    server = await startTestServer();
    tmp = tempDir("wy-exec-");
    const deps = fixtureDeps();
    project = writeProject(path.join(tmp.dir, "probe"), deps, PROBE_SOURCE);
    env = cliEnv(server, path.join(tmp.dir, "home"));
    const deployed = await run(["workers", "deploy", "--name", "probe"]);
    expect(deployed.stderr).toContain("✔ Worker created");
    expect(deployed.code).toBe(0);
  });
  afterAll(async () => {
    await server?.stop();
    tmp?.cleanup();
  });

  it("prints the result pretty, keys sorted, alone on stdout", async () => {
    const result = await run(["workers", "exec", "echo", "-d", '{"text":"hi"}']);
    expect(result).toEqual({ code: 0, stdout: echoResult("hi"), stderr: "" });
  });

  it("reads the input from stdin when -d is not given", async () => {
    const result = await run(["workers", "exec", "echo"], '{"text":"from stdin"}');
    expect(result.code).toBe(0);
    expect(result.stdout).toBe(echoResult("from stdin"));
  });

  it("--stream puts the worker's output on stderr as [worker] / [worker:err] and the result on stdout", async () => {
    const result = await run(["workers", "exec", "echo", "--stream", "-d", '{"text":"streamed"}']);
    expect(result.code).toBe(0);
    expect(result.stdout).toBe(echoResult("streamed"));
    expect(result.stderr).toContain("[worker] echo says streamed\n");
    expect(result.stderr).toContain("[worker:err] echo warns streamed\n");
    expect(result.stdout).not.toContain("echo says");
  });

  it("rejects an invalid input, saying what is invalid", async () => {
    const result = await run(["workers", "exec", "echo", "-d", '{"text":5}']);
    expect(result.code).toBe(5);
    expect(result.stdout).toBe("");
    expect(result.stderr).toMatch(/^error: .*Invalid input.*\/text.*must be string/m);
  });

  it("reports a tool that throws with its message, and its logs hold a stack at /src/index.ts", async () => {
    const result = await run(["workers", "exec", "boom"]);
    expect(result.code).toBe(5);
    expect(result.stdout).toBe("");
    expect(result.stderr).toMatch(/^error: kaboom: the tool failed on purpose$/m);
    const runId = /runs logs (\S+)/.exec(result.stderr)?.[1];
    expect(runId, result.stderr).toBeDefined();

    const logs = await run(["workers", "runs", "logs", runId!]);
    expect(logs.code).toBe(0);
    expect(logs.stdout).toContain("kaboom: the tool failed on purpose");
    expect(logs.stdout).toContain(`/src/index.ts:${lineOf(PROBE_SOURCE, "kaboom: the tool failed")}:`);
    // Mapped to the worker's own source, not the bundle the server built.
    expect(logs.stdout).not.toMatch(/index\.mjs:\d+/);
  });

  it("--stream of a failing tool prints the error, then Run failed (exit 5)", async () => {
    const result = await run(["workers", "exec", "boom", "--stream"]);
    expect(result.code).toBe(5);
    expect(result.stdout).toBe("");
    expect(result.stderr).toContain("error: kaboom: the tool failed on purpose");
    expect(result.stderr).toContain("error: Run failed.");
  });

  it("refuses an unknown key", async () => {
    const result = await run(["workers", "exec", "nope"]);
    expect(result.code).toBe(5);
    expect(result.stderr).toMatch(/^error: .*"nope"/m);
  });

  it("refuses to run an OAuth capability: it only provides configuration", async () => {
    const result = await run(["workers", "exec", "demoAuth"]);
    expect(result.code).toBe(5);
    expect(result.stderr).toContain("only provides configuration");
  });

  it("lists an automation, and running it answers 'not supported by this server yet'", async () => {
    const caps = await run(["workers", "capabilities", "list", "--json"]);
    expect(caps.code).toBe(0);
    expect(JSON.parse(caps.stdout)).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ _tag: "automation", key: "onPage" }),
        expect.objectContaining({ _tag: "oauth", key: "demoAuth" }),
        expect.objectContaining({ _tag: "tool", key: "echo" }),
      ]),
    );
    const result = await run(["workers", "exec", "onPage"]);
    expect(result.code).toBe(5);
    expect(result.stderr).toContain("not supported by this server yet");
  });

  it("rejects malformed -d JSON locally (exit 1), before any run", async () => {
    const before = (await server.call("ListRunsForWorker", { workerId: workerIdOf(project) })).body.runs.length;
    const result = await run(["workers", "exec", "echo", "-d", "{text:"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^error: Invalid JSON in --data$/m);
    expect((await server.call("ListRunsForWorker", { workerId: workerIdOf(project) })).body.runs.length).toBe(before);
  });

  it("gives a tool a secret set after the deploy, without a redeploy", async () => {
    const set = await run(["workers", "env", "set", "GREETING=hi"]);
    expect(set.code).toBe(0);
    const first = await run(["workers", "exec", "greet"]);
    expect(first.code).toBe(0);
    expect(JSON.parse(first.stdout).greeting).toBe("hi");

    expect((await run(["workers", "env", "set", "GREETING=hello again"])).code).toBe(0);
    const second = await run(["workers", "exec", "greet"]);
    expect(JSON.parse(second.stdout).greeting).toBe("hello again");
  });

  it("gives module-level code the new value: warm processes are replaced when secrets change", async () => {
    expect((await run(["workers", "env", "set", "AT_LOAD=first"])).code).toBe(0);
    // Twice, so a warm process serves the second run.
    for (let i = 0; i < 2; i++) expect(JSON.parse((await run(["workers", "exec", "greet"])).stdout).atLoad).toBe("first");
    expect((await run(["workers", "env", "set", "AT_LOAD=second"])).code).toBe(0);
    expect(JSON.parse((await run(["workers", "exec", "greet"])).stdout).atLoad).toBe("second");
  });

  it("keeps a secret out of deploy output, run output, runs list and the stored build log", async () => {
    const canary = "client-secret-canary-7f3a9c";
    expect((await run(["workers", "env", "set", `DEMO_CLIENT_SECRET=${canary}`])).code).toBe(0);
    const deployed = await run(["workers", "deploy"]);
    expect(deployed.code, deployed.stderr).toBe(0);
    const ran = await run(["workers", "exec", "echo", "--stream", "-d", '{"text":"canary check"}']);
    expect(ran.code).toBe(0);
    const listed = await run(["workers", "runs", "list", "--json"]);
    const caps = await run(["workers", "capabilities", "list", "--json"]);
    for (const output of [deployed, ran, listed, caps]) expect(output.stdout + output.stderr).not.toContain(canary);
    const builds = await server.server.store.db.selectFrom("deployments").select(["build_log"]).where("worker_id", "=", workerIdOf(project)).execute();
    for (const build of builds) expect(build.build_log ?? "").not.toContain(canary);
  });

  it("does not hand the server's NOTION_* settings to the worker", async () => {
    const result = await run(["workers", "exec", "greet"]);
    expect(JSON.parse(result.stdout)).toMatchObject({ notionToken: null, notionBaseUrl: null });
    expect(result.stdout).not.toContain(server.adminToken);
  });

  it("runs list shows status, exit code and duration; --json holds them too", async () => {
    // Runs of its own: one that succeeds, one refused by the tool's schema, one that throws, and
    // requests refused before a run exists.
    expect((await run(["workers", "exec", "echo", "-d", '{"text":"listed"}'])).code).toBe(0);
    expect((await run(["workers", "exec", "echo", "-d", '{"text":5}'])).code).toBe(5);
    expect((await run(["workers", "exec", "boom"])).code).toBe(5);
    expect((await run(["workers", "exec", "nope"])).code).toBe(5);
    expect((await run(["workers", "exec", "onPage"])).code).toBe(5);
    const table = await run(["workers", "runs", "list"]);
    expect(table.code).toBe(0);
    const [header, ...rows] = table.stdout.trimEnd().split("\n");
    expect(header).toMatch(/^RUN ID\s+NAME\s+STATUS\s+EXIT CODE\s+DURATION\s+STARTED AT\s+ENDED AT$/);
    expect(rows.some((row) => /\secho\s+succeeded\s+0\s+\d+ms\s/.test(row))).toBe(true);
    expect(rows.some((row) => /\sboom\s+failed\s+1\s+\d+ms\s/.test(row))).toBe(true);

    const json = await run(["workers", "runs", "list", "--json"]);
    expect(json.code).toBe(0);
    const runs = JSON.parse(json.stdout) as { name: string; status: string; exitCode: number; durationMs: number; error: string | null }[];
    const boom = runs.find((r) => r.name === "boom")!;
    expect(boom).toMatchObject({ status: "failed", exitCode: 1, error: expect.stringContaining("kaboom") });
    expect(typeof boom.durationMs).toBe("number");
    expect(runs).toContainEqual(expect.objectContaining({ name: "echo", status: "succeeded", exitCode: 0, error: null }));
    expect(runs).toContainEqual(expect.objectContaining({ name: "echo", status: "failed", exitCode: 1, error: expect.stringContaining("/text") }));
    // Refused requests (unknown key, OAuth, automation, bad JSON) are not runs.
    expect(runs.map((r) => r.name)).not.toContain("nope");
    expect(runs.map((r) => r.name)).not.toContain("onPage");
  });
});
