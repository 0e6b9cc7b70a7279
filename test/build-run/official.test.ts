import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT } from "../helpers/paths.js";
import { ntnBinary, officialNtn, type NtnResult } from "../helpers/run-ntn.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { tempDir } from "../helpers/tmp.js";
import { cliEnv, echoResult, lineOf, fixtureDeps, PROBE_SOURCE, writeProject } from "./fixtures.js";

/** SPEC section 1: the example that goes with the seed's guide, as examples/github-oauth holds it. */
const SEED_SOURCE = fs.readFileSync(path.join(ROOT, "examples/github-oauth/src/index.ts"), "utf8");

describe("the official ntn 0.4.0 builds and runs workers on Workyard", () => {
  let server: TestServer;
  let tmp: { dir: string; cleanup(): void };
  let env: Record<string, string | undefined>;
  let scaffold: string;
  let seed: string;
  const official = (cwd: string, argv: string[], input?: string) => officialNtn(argv, { cwd, env, ...(input === undefined ? {} : { input }) });
  const runsOf = async (cwd: string) => {
    const listed = await official(cwd, ["workers", "runs", "list", "--json"]);
    expect(listed.code, listed.stderr).toBe(0);
    return JSON.parse(listed.stdout) as { runId: string; name: string; exitCode: number | null; startedAt: string; endedAt: string | null }[];
  };

  /*
   * Stages, each run once by whichever test needs it first, so every test runs alone (-t) or in
   * any order: the scaffold deployed, then updated with the probe's capabilities; the seed deployed.
   */
  let helloDeploy: Promise<NtnResult> | undefined;
  const helloDeployed = () => (helloDeploy ??= official(scaffold, ["workers", "deploy", "--name", "hello"]));
  /** A second worker from the scaffold ("probe"), deployed as it is and then with the probe's source. */
  let probe: string;
  let probeDeploy: Promise<NtnResult> | undefined;
  const probeDeployed = () =>
    (probeDeploy ??= (async () => {
      probe = path.join(tmp.dir, "probe");
      fs.cpSync(scaffold, probe, { recursive: true, filter: (source) => !["workers.json", "node_modules"].includes(path.basename(source)) });
      expect((await official(probe, ["workers", "deploy", "--name", "probe"])).code).toBe(0);
      fs.writeFileSync(path.join(probe, "src", "index.ts"), PROBE_SOURCE);
      return official(probe, ["workers", "deploy"]);
    })());
  let seedDeploy: Promise<NtnResult> | undefined;
  const seedDeployed = () => (seedDeploy ??= official(seed, ["workers", "deploy", "--name", "seed"]));

  beforeAll(async () => {
    server = await startTestServer();
    tmp = tempDir("wy-official-");
    env = cliEnv(server, path.join(tmp.dir, "home"));
    const made = await ntnBinary(["workers", "new", "hello", "--no-git"], { cwd: tmp.dir, env });
    expect(made.code, made.stderr).toBe(0);
    scaffold = path.join(tmp.dir, "hello");
    const deps = fixtureDeps();
    seed = writeProject(path.join(tmp.dir, "seed"), deps, SEED_SOURCE);
  });
  afterAll(async () => {
    await server?.stop();
    tmp?.cleanup();
  });

  it("deploys the scaffolded worker with --name and runs its tool, plain and streamed", async () => {
    const deployed = await helloDeployed();
    expect(deployed.code, deployed.stderr).toBe(0);
    expect(deployed.stdout).toBe("");
    expect(deployed.stderr).toMatch(/^\[build\] Bundling src\/index\.ts/m);
    expect(deployed.stderr).toContain("✔ Worker created");
    expect(deployed.stderr).toMatch(/^ {4}\+ tool {2}sayHello$/m);
    const workersJson = JSON.parse(fs.readFileSync(path.join(scaffold, "workers.json"), "utf8"));
    expect(workersJson).toMatchObject({ version: "1", workspaceId: server.workspaceId });

    const hello = '{\n  "message": "Hello, World!"\n}\n';
    expect(await official(scaffold, ["workers", "exec", "sayHello", "-d", '{"name":"World"}'])).toEqual({ code: 0, stdout: hello, stderr: "" });
    const streamed = await official(scaffold, ["workers", "exec", "sayHello", "--stream", "-d", '{"name":"World"}']);
    expect(streamed).toMatchObject({ code: 0, stdout: hello });
  });

  it("updates it with more capabilities and prints the +/- diff", async () => {
    const deployed = await probeDeployed();
    expect(deployed.code, deployed.stderr).toBe(0);
    expect(deployed.stderr).toContain("✔ Worker updated");
    const block = deployed.stderr.slice(deployed.stderr.indexOf("Capabilities:"));
    expect(block.split("\n").filter((line) => line.startsWith("    "))).toEqual([
      "    + automation  onPage",
      "    + oauth       demoAuth",
      "    + tool        boom",
      "    + tool        echo",
      "    + tool        greet",
      "    - tool        sayHello",
    ]);
    const caps = await official(probe, ["workers", "capabilities", "list"]);
    expect(caps.code).toBe(0);
    expect(caps.stdout.split("\n")[0]).toMatch(/^TYPE\s+KEY$/);
    expect(caps.stdout).toMatch(/^automation {2}onPage$/m);
    expect(caps.stdout).toMatch(/^tool {8}echo$/m);
  });

  it("exec prints the result with sorted keys; input from -d or stdin", async () => {
    expect((await probeDeployed()).code).toBe(0);
    expect(await official(probe, ["workers", "exec", "echo", "-d", '{"text":"official"}'])).toEqual({ code: 0, stdout: echoResult("official"), stderr: "" });
    const piped = await official(probe, ["workers", "exec", "echo"], '{"text":"piped"}');
    expect(piped).toMatchObject({ code: 0, stdout: echoResult("piped") });
  });

  it("exec --stream prints [worker] / [worker:err] lines on stderr and the result on stdout", async () => {
    expect((await probeDeployed()).code).toBe(0);
    const result = await official(probe, ["workers", "exec", "echo", "--stream", "-d", '{"text":"streamed"}']);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toBe(echoResult("streamed"));
    expect(result.stderr).toContain("[worker] echo says streamed\n");
    expect(result.stderr).toContain("[worker:err] echo warns streamed\n");
  });

  it("failures exit 5 with the server's message; malformed -d exits 1", async () => {
    expect((await probeDeployed()).code).toBe(0);
    const invalid = await official(probe, ["workers", "exec", "echo", "-d", '{"text":5}']);
    expect(invalid.code).toBe(5);
    expect(invalid.stderr).toMatch(/^error: .*Invalid input.*\/text.*must be string/m);

    const thrown = await official(probe, ["workers", "exec", "boom"]);
    expect(thrown.code).toBe(5);
    expect(thrown.stdout).toBe("");
    expect(thrown.stderr).toMatch(/^error: .*kaboom: the tool failed on purpose/m);

    const streamed = await official(probe, ["workers", "exec", "boom", "--stream"]);
    expect(streamed.code).toBe(5);
    expect(streamed.stderr).toContain("error: kaboom: the tool failed on purpose\n");
    expect(streamed.stderr).toContain("error: Run failed.\n");

    const unknown = await official(probe, ["workers", "exec", "nope"]);
    expect(unknown.code).toBe(5);
    expect(unknown.stderr).toContain('"nope"');

    const oauth = await official(probe, ["workers", "exec", "demoAuth"]);
    expect(oauth.code).toBe(5);
    expect(oauth.stderr).toContain("only provides configuration");

    const automation = await official(probe, ["workers", "exec", "onPage"]);
    expect(automation.code).toBe(5);
    expect(automation.stderr).toContain("not supported by this server yet");

    const malformed = await official(probe, ["workers", "exec", "echo", "-d", "{text:"]);
    expect(malformed.code).toBe(1);
    expect(malformed.stderr).toMatch(/^error: Invalid JSON in --data$/m);
  });

  it("runs list and runs logs show the runs, with a stack at /src/index.ts for the one that threw", async () => {
    expect((await probeDeployed()).code).toBe(0);
    expect((await official(probe, ["workers", "exec", "echo", "-d", '{"text":"listed"}'])).code).toBe(0);
    expect((await official(probe, ["workers", "exec", "boom"])).code).toBe(5);
    const table = await official(probe, ["workers", "runs", "list"]);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout.split("\n")[0]).toMatch(/^RUN ID\s+NAME\s+EXIT CODE\s+STARTED AT\s+ENDED AT$/);
    expect(table.stdout).toMatch(/^\S+\s+echo\s+0\s+\S+Z\s+\S+Z$/m);
    expect(table.stdout).toMatch(/^\S+\s+boom\s+1\s+\S+Z\s+\S+Z$/m);

    const runs = await runsOf(probe);
    const boom = runs.find((r) => r.name === "boom")!;
    expect(boom).toMatchObject({ exitCode: 1, endedAt: expect.any(String) });

    const logs = await official(probe, ["workers", "runs", "logs", boom.runId]);
    expect(logs.code).toBe(0);
    expect(logs.stdout).toContain("kaboom: the tool failed on purpose");
    expect(logs.stdout).toContain(`/src/index.ts:${lineOf(PROBE_SOURCE, "kaboom: the tool failed")}:`);

    const echo = runs.find((r) => r.name === "echo" && r.exitCode === 0)!;
    const echoLogs = await official(probe, ["workers", "runs", "logs", echo.runId]);
    expect(echoLogs.stdout).toMatch(/echo says \w+\necho warns \w+\n/);
  });

  it("deploys the seed's worker with empty client credentials and lists its capabilities", async () => {
    const deployed = await seedDeployed();
    expect(deployed.code, deployed.stderr).toBe(0);
    expect(deployed.stderr).toContain("✔ Worker created");
    expect(deployed.stderr).toMatch(/^ {4}\+ oauth {2}githubAuth$/m);
    expect(deployed.stderr).toMatch(/^ {4}\+ tool {3}getGitHubRepos$/m);

    const caps = await official(seed, ["workers", "capabilities", "list"]);
    expect(caps).toEqual({ code: 0, stdout: "TYPE   KEY\noauth  githubAuth\ntool   getGitHubRepos\n", stderr: "" });
  });

  it("runs the seed's tool remotely: without a connection it fails (exit 5) and the run is listed", async () => {
    expect((await seedDeployed()).code).toBe(0);
    const oauth = await official(seed, ["workers", "exec", "githubAuth"]);
    expect(oauth.code).toBe(5);
    expect(oauth.stderr).toContain("only provides configuration");

    const result = await official(seed, ["workers", "exec", "getGitHubRepos", "-d", "{}"]);
    expect(result.code).toBe(5);
    expect(result.stdout).toBe("");
    expect(result.stderr).toMatch(/OAuth/);

    const runs = await runsOf(seed);
    expect(runs.map((r) => [r.name, r.exitCode])).toEqual([["getGitHubRepos", 1]]);
    const logs = await official(seed, ["workers", "runs", "logs", runs[0]!.runId]);
    expect(logs.code).toBe(0);
    expect(logs.stdout).toContain("OAUTH_6769746875622D6F61757468_ACCESS_TOKEN");
  });

  it("a project without src/index.ts fails the build on the server and leaves the previous version live", async () => {
    expect((await seedDeployed()).code).toBe(0);
    fs.renameSync(path.join(seed, "src", "index.ts"), path.join(seed, "src", "main.ts"));
    const deployed = await official(seed, ["workers", "deploy"]);
    fs.renameSync(path.join(seed, "src", "main.ts"), path.join(seed, "src", "index.ts"));
    expect(deployed.code).toBe(5);
    expect(deployed.stderr).toMatch(/^\[build:error\] .*src\/index\.ts/m);
    expect(deployed.stderr).toContain("error: Worker build failed.");

    const caps = await official(seed, ["workers", "capabilities", "list"]);
    expect(caps.stdout).toBe("TYPE   KEY\noauth  githubAuth\ntool   getGitHubRepos\n");
    const oauth = await official(seed, ["workers", "exec", "githubAuth"]);
    expect(oauth.stderr).toContain("only provides configuration");
  });
});
