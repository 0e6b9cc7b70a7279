/**
 * Worker projects for the build-and-run tests: small sources written into temp dirs, each with the
 * committed package.json + package-lock.json of test/fixtures/worker.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { FIXTURE_LOCKFILE, FIXTURE_PACKAGE_JSON, TEST_NPM_CACHE } from "../helpers/fixture-worker.js";
import { baseEnv } from "../helpers/run-ntn.js";
import type { TestServer } from "../helpers/start-server.js";

export interface Deps {
  packageJson: string;
  lockfile: string;
}

export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (npm, npx), with the test's own environment unless given one. */
export function sh(command: string, args: string[], options: { cwd: string; env?: Record<string, string | undefined> }): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: (options.env ?? process.env) as NodeJS.ProcessEnv, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** package.json and the committed lockfile of test/fixtures/worker: the SDK and the Notion client. */
export function fixtureDeps(): Deps {
  return { packageJson: FIXTURE_PACKAGE_JSON, lockfile: FIXTURE_LOCKFILE };
}

/** A worker project: package.json + lockfile, src/index.ts and any other files. */
export function writeProject(dir: string, deps: Deps, source: string, extra: Record<string, string> = {}): string {
  fs.mkdirSync(path.join(dir, "src"), { recursive: true });
  fs.writeFileSync(path.join(dir, "package.json"), deps.packageJson);
  fs.writeFileSync(path.join(dir, "package-lock.json"), deps.lockfile);
  fs.writeFileSync(path.join(dir, "src", "index.ts"), source);
  for (const [file, content] of Object.entries(extra)) {
    fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    fs.writeFileSync(path.join(dir, file), content);
  }
  return dir;
}

/** node_modules in a project from its lockfile, from the suite's warm npm cache. */
export async function installProject(dir: string): Promise<void> {
  const result = await sh("npm", ["ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline", `--cache=${TEST_NPM_CACHE}`], { cwd: dir });
  if (result.code !== 0) throw new Error(`npm ci failed in ${dir}:\n${result.stderr}`);
}

/** What both CLIs need to reach a test server, on top of a clean environment. */
export function cliEnv(server: TestServer, home: string, extra: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return {
    ...baseEnv(home),
    NOTION_API_BASE_URL: server.url,
    NOTION_API_TOKEN: server.adminToken,
    NOTION_WORKSPACE_ID: server.workspaceId,
    ...extra,
  };
}

/** The deployment id the build log names ("Deployment <id> is live."). */
export function liveDeploymentId(buildLog: string): string {
  const match = /Deployment (\S+) is live\./.exec(buildLog);
  if (!match) throw new Error(`No live deployment in the build log:\n${buildLog}`);
  return match[1]!;
}

/** 1-based line of the first line of `source` containing `needle`. */
export function lineOf(source: string, needle: string): number {
  const index = source.split("\n").findIndex((line) => line.includes(needle));
  if (index < 0) throw new Error(`${needle} is not in the source`);
  return index + 1;
}

export function workerIdOf(projectDir: string): string {
  return (JSON.parse(fs.readFileSync(path.join(projectDir, "workers.json"), "utf8")) as { workerId: string }).workerId;
}

/** The result the official CLI prints for the probe's echo tool: keys sorted at every level. */
export function echoResult(text: string): string {
  return `${JSON.stringify({ Beta: null, alpha: text, nested: { a: [2, { c: 2, d: 1 }], b: 1 }, zeta: 1 }, null, 2)}\n`;
}

/**
 * A worker with one of each thing the run path handles: a tool that logs and returns keys out of
 * order, one that reads secrets (at each call and at module load), one that throws, an OAuth
 * capability and an automation.
 */
export const PROBE_SOURCE = `import { Worker } from "@notionhq/workers";
import { j } from "@notionhq/workers/schema-builder";

const worker = new Worker();
export default worker;

// Read once, when the module loads.
const AT_LOAD = process.env.AT_LOAD ?? null;

worker.oauth("demoAuth", {
  name: "demo-oauth",
  authorizationEndpoint: "http://127.0.0.1:9/authorize",
  tokenEndpoint: "http://127.0.0.1:9/token",
  scope: "read",
  clientId: process.env.DEMO_CLIENT_ID ?? "",
  clientSecret: process.env.DEMO_CLIENT_SECRET ?? "",
});

worker.tool("echo", {
  title: "Echo",
  description: "Logs its input and returns it with keys out of order",
  schema: j.object({ text: j.string() }),
  execute: async ({ text }) => {
    console.log(\`echo says \${text}\`);
    console.error(\`echo warns \${text}\`);
    return { zeta: 1, alpha: text, Beta: null, nested: { b: 1, a: [2, { d: 1, c: 2 }] } };
  },
});

worker.tool("greet", {
  title: "Greet",
  description: "Returns what the environment holds",
  schema: j.object({}),
  execute: async () => ({
    greeting: process.env.GREETING ?? null,
    atLoad: AT_LOAD,
    notionToken: process.env.NOTION_API_TOKEN ?? null,
    notionBaseUrl: process.env.NOTION_API_BASE_URL ?? null,
  }),
});

worker.tool("boom", {
  title: "Boom",
  description: "Throws",
  schema: j.object({}),
  execute: async () => {
    throw new Error("kaboom: the tool failed on purpose");
  },
});

worker.automation("onPage", {
  title: "On page",
  description: "An automation: deploys and lists, does not run here",
  execute: async () => {},
});
`;
