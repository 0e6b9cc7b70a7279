import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, expect } from "vitest";
import { workerProject } from "./cli.js";
import { baseEnv, type NtnOptions, type NtnResult } from "./run-ntn.js";
import { startTestServer, type TestServer } from "./start-server.js";
import { tempDir } from "./tmp.js";

export interface CliRunOptions {
  cwd?: string;
  env?: Record<string, string | undefined>;
  input?: string;
}

/**
 * What a CLI test file (ours or the official one) stands on: a server, a HOME of its own, a worker
 * project linked to a worker named "alpha" (made through the API, so no test depends on another
 * having run `workers create`), and folders linked to workers of their own for tests that change
 * one. Registers its beforeAll/afterAll in the calling describe.
 */
export function cliSuite(prefix: string) {
  let server!: TestServer;
  let home!: { dir: string; cleanup(): void };
  let project!: { dir: string; cleanup(): void };
  let env!: Record<string, string | undefined>;
  let projectWorkerId!: string;
  const cleanups: (() => void)[] = [];

  /** Writes dir/workers.json for the worker, byte for byte as `ntn workers create` does. */
  const linkWorker = (dir: string, workerId: string): string => {
    fs.writeFileSync(
      path.join(dir, "workers.json"),
      JSON.stringify({ version: "1", environment: "prod", workspaceId: server.workspaceId, workerId }, null, 2),
    );
    return workerId;
  };

  beforeAll(async () => {
    server = await startTestServer();
    home = tempDir(`${prefix}-home-`);
    project = workerProject(`${prefix}-project-`);
    env = { ...baseEnv(home.dir), NOTION_API_BASE_URL: server.url, NOTION_API_TOKEN: server.adminToken, NOTION_WORKSPACE_ID: server.workspaceId };
    projectWorkerId = linkWorker(project.dir, (await server.call("CreateWorker", { name: "alpha", uploadType: "source" })).body.worker.workerId);
  });
  afterAll(async () => {
    await server?.stop();
    home?.cleanup();
    project?.cleanup();
    for (const cleanup of cleanups) cleanup();
  });

  /** A folder of its own (no workers.json), removed after the file. */
  const scratchDir = (name: string): string => {
    const dir = tempDir(`${prefix}-${name}-`);
    cleanups.push(dir.cleanup);
    return dir.dir;
  };

  return {
    get server() {
      return server;
    },
    get env() {
      return env;
    },
    /** The project folder, linked to `projectWorkerId` ("alpha"). */
    get projectDir() {
      return project.dir;
    },
    get projectWorkerId() {
      return projectWorkerId;
    },
    scratchDir,
    linkWorker,
    /** A CLI call in the project folder with the suite's env, unless told otherwise. */
    runWith(cli: (argv: string[], options: NtnOptions) => Promise<NtnResult>) {
      return (argv: string[], options: CliRunOptions = {}) =>
        cli(argv, { cwd: options.cwd ?? project.dir, env: options.env ?? env, ...(options.input !== undefined ? { input: options.input } : {}) });
    },
    /** A worker of its own (made through the API, with these variables) and a folder linked to it. */
    async linkedWorker(name: string, secrets: Record<string, string> = {}): Promise<{ dir: string; workerId: string }> {
      const dir = scratchDir(name);
      const workerId = linkWorker(dir, (await server.call("CreateWorker", { name, uploadType: "source" })).body.worker.workerId);
      if (Object.keys(secrets).length > 0) {
        const set = await server.call("UpsertSecrets", { workerId, secrets: Object.entries(secrets).map(([key, value]) => ({ key, value })) });
        expect(set.status).toBe(200);
      }
      return { dir, workerId };
    },
    /** The worker's variables as PullEnv gives them, name to value. */
    async remoteEnv(workerId: string): Promise<Record<string, string>> {
      return Object.fromEntries((await server.call("PullEnv", { workerId })).body.env.map((e: { key: string; value: string }) => [e.key, e.value]));
    },
    /** A token made through the API. */
    async madeToken(name: string): Promise<{ id: string; token: string }> {
      const made = await server.call("CreateToken", { name });
      expect(made.status).toBe(200);
      return { id: made.body.id, token: made.body.token };
    },
  };
}
