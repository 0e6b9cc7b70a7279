/**
 * Several `ntn server` processes on one PostgreSQL schema, as an operator runs a cluster: one
 * master key (WORKYARD_MASTER_KEY) for all, a data dir of their own each (like separate machines),
 * the admin token from the first process that started against the empty schema. Plus what the
 * multi-process tests share: worker projects made from the committed fixture, deployed with our CLI through any
 * process, and SQL on the schema for what a user cannot see.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import pg from "pg";
import { expect } from "vitest";
import { CHANGES_CHANNEL } from "../../packages/server/src/store/changes.js";
import { fixtureProject } from "./fixture-worker.js";
import { freshSchema } from "./pg.js";
import { baseEnv, ntn, ok, type NtnResult } from "./run-ntn.js";
import { resourceStatus } from "./start-provider.js";

export { ok, resourceStatus };
import { callAction, startServerProcess, type ServerProcess } from "./server-process.js";
import { tempDir } from "./tmp.js";

/** A master key as an operator makes one: base64 of 32 random bytes. */
export function newMasterKey(): string {
  return crypto.randomBytes(32).toString("base64");
}

export interface ProcessOptions {
  /** An existing data dir (a process restarted on the same machine); a new one otherwise. */
  dataDir?: string;
  args?: string[];
  env?: Record<string, string>;
  backgroundRefresh?: boolean;
  /** The fixture's installed tree in place (default): false for tests of the install itself. */
  installedFixture?: boolean;
}

export interface Cluster {
  databaseUrl: string;
  schema: string;
  masterKey: string;
  adminToken: string;
  workspaceId: string;
  /** Every process started so far (killed ones included). */
  processes: ServerProcess[];
  /** Another process on the same schema and key, with a data dir of its own (or the one given). */
  start(options?: ProcessOptions): Promise<ServerProcess>;
  /** An action through one process, with the admin token unless another is given. */
  call(proc: ServerProcess, action: string, body?: unknown, token?: string): Promise<{ status: number; body: any }>;
  /** SQL on the cluster's schema. */
  sql<T = Record<string, unknown>>(text: string, params?: unknown[]): Promise<T[]>;
  /**
   * Tells the processes that rows a test changed with `sql` changed, as the server's own writes do
   * (store/changes.ts): they drop what they keep of them.
   */
  announce(...changes: { table: string; id?: string }[]): Promise<void>;
  /** Kills every process, drops the schema, removes the data dirs. */
  stop(): Promise<void>;
}

/** `count` processes started one after the other (the first one creates the workspace). */
export async function startCluster(count: number, options: ProcessOptions = {}): Promise<Cluster> {
  const schema = await freshSchema();
  const root = tempDir("wy-cluster-");
  const masterKey = newMasterKey();
  const processes: ServerProcess[] = [];
  const tmpRoot = path.join(root.dir, "tmp");
  fs.mkdirSync(tmpRoot);
  // BIGINT columns hold epoch milliseconds: read them as numbers, as the server does.
  const client = new pg.Client({
    connectionString: schema.url,
    types: {
      getTypeParser: ((oid: number, format?: "text" | "binary") =>
        oid === 20 ? (value: string) => Number(value) : pg.types.getTypeParser(oid, format as "text")) as typeof pg.types.getTypeParser,
    },
  });
  await client.connect();
  let n = 0;
  const start = async (opts: ProcessOptions = options) => {
    const dataDir = opts.dataDir ?? path.join(root.dir, `p${++n}`);
    fs.mkdirSync(dataDir, { recursive: true });
    // Temporary files of the processes (extracted archives, say) stay under the cluster's root,
    // so what a killed process leaves there is removed with it.
    const env = { TMPDIR: tmpRoot, ...opts.env };
    const proc = await startServerProcess({ databaseUrl: schema.url, masterKey, ...opts, dataDir, env });
    processes.push(proc);
    return proc;
  };
  const stop = async () => {
    await Promise.all(processes.map((p) => p.kill("SIGKILL")));
    await client.end().catch(() => {});
    await schema.drop();
    root.cleanup();
  };
  try {
    const first = await start();
    const adminToken = fs.readFileSync(path.join(first.dataDir, "admin-token"), "utf8").trim();
    const who = await callAction(first.url, "WhoAmI", {}, adminToken);
    expect(who.status, JSON.stringify(who.body)).toBe(200);
    for (let i = 1; i < count; i++) await start();
    return {
      databaseUrl: schema.url,
      schema: schema.schema,
      masterKey,
      adminToken,
      workspaceId: who.body.workspaceId as string,
      processes,
      start,
      call: (proc, action, body = {}, token = adminToken) => callAction(proc.url, action, body, token),
      sql: async <T>(text: string, params: unknown[] = []) => (await client.query(text, params)).rows as T[],
      announce: async (...changes) => {
        await client.query("select pg_notify($1, $2)", [CHANGES_CHANNEL, JSON.stringify(changes)]);
        // Delivered to the listening processes asynchronously (milliseconds; more on a loaded
        // machine): nothing tells when each has heard it.
        await new Promise((resolve) => setTimeout(resolve, 300));
      },
      stop,
    };
  } catch (error) {
    await stop().catch(() => {});
    throw error;
  }
}

export interface Projects {
  root: string;
  /** Our CLI pointed at one process (NOTION_API_BASE_URL), as the admin. */
  cli(url: string, argv: string[], cwd: string): Promise<NtnResult>;
  /** The CLI's environment for one process. */
  env(url: string): Record<string, string>;
  /** A worker project `<root>/<name>` with `source` as src/index.ts (the fixture's package files). */
  project(name: string, source: string): string;
  /** `ntn workers deploy` (`--name` on the first one) through `url`; answers the worker id. */
  deploy(url: string, dir: string): Promise<string>;
  cleanup(): void;
}

/** Worker projects from the committed fixture (test/fixtures/worker), deployed through any process. */
export async function scaffoldProjects(cluster: Pick<Cluster, "adminToken" | "workspaceId">): Promise<Projects> {
  const tmp = tempDir("wy-projects-");
  const home = path.join(tmp.dir, "home");
  const env = (url: string) => ({
    ...baseEnv(home),
    NOTION_API_BASE_URL: url,
    NOTION_API_TOKEN: cluster.adminToken,
    NOTION_WORKSPACE_ID: cluster.workspaceId,
  });
  const cli = (url: string, argv: string[], cwd: string) => ntn(argv, { cwd, env: env(url), timeoutMs: 180_000 });
  return {
    root: tmp.dir,
    cli,
    env,
    project(name, source) {
      return fixtureProject(path.join(tmp.dir, name), source);
    },
    async deploy(url, dir) {
      const first = !fs.existsSync(path.join(dir, "workers.json"));
      ok(await cli(url, ["workers", "deploy", ...(first ? ["--name", path.basename(dir)] : [])], dir));
      return (JSON.parse(fs.readFileSync(path.join(dir, "workers.json"), "utf8")) as { workerId: string }).workerId;
    },
    cleanup: () => tmp.cleanup(),
  };
}

/** Tools added to the seed's worker (they go after its code: `worker` is in scope). */
export const EXTRA_TOOLS = `
const secretAtLoad = process.env.CLUSTER_SECRET ?? null;
// Which process answered: every worker process is pid 1 of its own PID namespace, so an id of its own.
const processId = Math.random().toString(36).slice(2);

worker.tool("whereAmI", {
  title: "Where am I",
  description: "The worker's secret as module code read it at load, and as it is now",
  schema: j.object({}),
  execute: async () => ({ atLoad: secretAtLoad, now: process.env.CLUSTER_SECRET ?? null, pid: processId }),
});

worker.tool("sleepy", {
  title: "Sleepy",
  description: "Sleeps, then answers",
  schema: j.object({ ms: j.number() }),
  execute: async ({ ms }) => {
    await new Promise((resolve) => setTimeout(resolve, ms));
    return { slept: ms };
  },
});
`;

/**
 * POSTs an action through a keep-alive agent (bounded sockets): for many concurrent requests
 * without opening a connection each. Answers status and parsed body.
 */
export function callThrough(agent: http.Agent, url: string, action: string, body: unknown, token: string): Promise<{ status: number; body: any }> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const request = http.request(
      `${url}/api/v3/workers${action}`,
      {
        method: "POST",
        agent,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(payload), authorization: `Bearer ${token}` },
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (c: Buffer) => chunks.push(c));
        response.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // keep the text
          }
          resolve({ status: response.statusCode ?? 0, body: parsed });
        });
        response.on("error", reject);
      },
    );
    request.on("error", reject);
    request.end(payload);
  });
}

/** Waits until `check` answers true, polling every `everyMs`; fails with `what` after `timeoutMs`. */
export async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 30_000, everyMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}.`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}
