import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { baseEnv, ntnBinary } from "../helpers/run-ntn.js";
import { tempDir } from "../helpers/tmp.js";
import { echoResult, installProject, lineOf, fixtureDeps, PROBE_SOURCE, writeProject } from "./fixtures.js";

// `exec --local` needs no server: the CLI points at a closed port, with a token that must not reach the worker.
// The built CLI: the local run's child writes to the CLI's own stderr, which only a process of its own captures.
const SHELL_TOKEN = "shell-notion-token-canary-4e1b";
const SHELL_BASE_URL = "http://127.0.0.1:9";

describe("exec --local with our ntn", () => {
  let tmp: { dir: string; cleanup(): void };
  let project: string;
  let env: Record<string, string | undefined>;
  const run = (argv: string[], extra: Record<string, string | undefined> = {}, input?: string) =>
    ntnBinary(argv, { cwd: project, env: { ...env, ...extra }, ...(input === undefined ? {} : { input }) });
  const greet = async (argv: string[] = []) => {
    const result = await run(["workers", "exec", "greet", "--local", ...argv]);
    expect(result.code, result.stderr).toBe(0);
    return JSON.parse(result.stdout) as { greeting: string | null; atLoad: string | null; notionToken: string | null; notionBaseUrl: string | null };
  };

  beforeAll(async () => {
    tmp = tempDir("wy-local-");
    const deps = fixtureDeps();
    project = writeProject(path.join(tmp.dir, "probe"), deps, PROBE_SOURCE);
    await installProject(project);
    env = {
      ...baseEnv(path.join(tmp.dir, "home")),
      NOTION_API_BASE_URL: SHELL_BASE_URL,
      NOTION_API_TOKEN: SHELL_TOKEN,
      NOTION_WORKSPACE_ID: "ws-local",
    };
  });
  afterAll(() => tmp?.cleanup());

  it("prints the result alone on stdout and the worker's console output on stderr", async () => {
    const result = await run(["workers", "exec", "echo", "--local", "-d", '{"text":"local"}']);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toBe(echoResult("local"));
    expect(result.stderr).toContain("echo says local");
    expect(result.stderr).toContain("echo warns local");
  });

  it("reads the input from stdin too", async () => {
    const result = await run(["workers", "exec", "echo", "--local"], {}, '{"text":"piped"}');
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toBe(echoResult("piped"));
  });

  /** The project's .env as the tests below expect it (a test may add to it after). */
  const writeDotenv = () => fs.writeFileSync(path.join(project, ".env"), "GREETING=from-dotenv\nAT_LOAD=loaded-from-dotenv\n");

  it("gives the worker the values of .env, at module load and at each call", async () => {
    writeDotenv();
    expect(await greet()).toMatchObject({ greeting: "from-dotenv", atLoad: "loaded-from-dotenv" });
  });

  it("lets .env win over the shell's value", async () => {
    writeDotenv();
    const result = await run(["workers", "exec", "greet", "--local"], { GREETING: "from-shell" });
    expect(JSON.parse(result.stdout).greeting).toBe("from-dotenv");
  });

  it("--dotenv loads another file instead of .env", async () => {
    fs.writeFileSync(path.join(project, "other.env"), "GREETING=from-other-file\n");
    expect(await greet(["--dotenv", "other.env"])).toMatchObject({ greeting: "from-other-file", atLoad: null });
  });

  it("--no-dotenv loads no file", async () => {
    expect(await greet(["--no-dotenv"])).toMatchObject({ greeting: null, atLoad: null });
  });

  it("a --dotenv file that does not exist fails (exit 1)", async () => {
    const result = await run(["workers", "exec", "greet", "--local", "--dotenv", "missing.env"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^error: Failed to read .*missing\.env/m);
  });

  it("does not pass the shell's NOTION_API_TOKEN / NOTION_API_BASE_URL to the worker unless .env sets them", async () => {
    writeDotenv();
    const without = await run(["workers", "exec", "greet", "--local"]);
    expect(JSON.parse(without.stdout)).toMatchObject({ notionToken: null, notionBaseUrl: null });
    expect(without.stdout + without.stderr).not.toContain(SHELL_TOKEN);

    fs.appendFileSync(path.join(project, ".env"), "NOTION_API_TOKEN=token-from-dotenv\n");
    expect(await greet()).toMatchObject({ notionToken: "token-from-dotenv", notionBaseUrl: null });
  });

  it("a tool that throws: exit 5 and its message; with -v, its stack pointing at src/index.ts, none of Workyard's frames", async () => {
    const result = await run(["workers", "exec", "boom", "--local"]);
    expect(result.code).toBe(5);
    expect(result.stdout).toBe("");
    expect(result.stderr).toMatch(/^error: kaboom: the tool failed on purpose$/m);
    expect(result.stderr).not.toMatch(/^\s+at /m);
    const verbose = await run(["-v", "workers", "exec", "boom", "--local"]);
    expect(verbose.code).toBe(5);
    expect(verbose.stderr).toContain(`src/index.ts:${lineOf(PROBE_SOURCE, "kaboom: the tool failed")}:`);
    expect(verbose.stderr).not.toMatch(/child\.m[jt]s|sandbox\/worker\.mjs/);
  });

  it("an invalid input says what is invalid, once, as the server's exec does (exit 5)", async () => {
    const result = await run(["workers", "exec", "echo", "--local", "-d", '{"text":5}']);
    expect(result.code).toBe(5);
    expect(result.stdout).toBe("");
    expect(result.stderr).toMatch(/^error: Invalid input: \/text must be string$/m);
    expect(result.stderr.match(/must be string/g)).toHaveLength(1);
    expect(result.stderr).not.toContain('"instancePath"');
  });

  it("an unknown capability, or one that does not run, gets the server's words and hint, no stack (exit 5)", async () => {
    const unknown = await run(["workers", "exec", "nope", "--local"]);
    expect(unknown.code).toBe(5);
    expect(unknown.stderr).toMatch(/^error: The worker has no capability "nope"\.$/m);
    expect(unknown.stderr).toMatch(/^ {2}hint: Run `ntn workers capabilities list` to see its capabilities\.$/m);
    expect(unknown.stderr).not.toMatch(/child\.m[jt]s|^\s+at /m);
    const oauth = await run(["workers", "exec", "demoAuth", "--local"]);
    expect(oauth.stderr).toMatch(/^error: "demoAuth" is an OAuth capability: it only provides configuration\.$/m);
    const automation = await run(["workers", "exec", "onPage", "--local"]);
    expect(automation.stderr).toMatch(/^error: Running automation capabilities is not supported by this server yet\.$/m);
  });

  it("outside a worker project it names the missing src/index.ts (exit 5)", async () => {
    const elsewhere = path.join(tmp.dir, "not-a-project");
    fs.mkdirSync(elsewhere, { recursive: true });
    const result = await ntnBinary(["workers", "exec", "greet", "--local"], { cwd: elsewhere, env });
    expect(result.code).toBe(5);
    expect(result.stderr).toContain("src/index.ts");
  });
});
