/** Bench fixtures: a server with a worker deployed from a small project, through our CLI. */
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startServer, type RunningServer, type ServerOptions } from "../packages/server/src/main.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const NTN = path.join(ROOT, "packages/cli/bin/ntn.js");
/** A worker project's package.json and lockfile: the example's, so installs are repeatable. */
const TEMPLATE = path.join(ROOT, "examples/github-oauth");

export interface BenchServer {
  server: RunningServer;
  token: string;
  dataDir: string;
  stop(): Promise<void>;
}

export async function benchServer(options: ServerOptions = {}): Promise<BenchServer> {
  // A data dir others can traverse, so worker processes run as an unprivileged user when root.
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "wy-bench-"));
  fs.chmodSync(dataDir, 0o711);
  // The benches' token endpoints listen on 127.0.0.1, which the egress policy denies by default.
  const server = await startServer({ port: 0, dataDir, logLevel: "warn", egressAllow: ["127.0.0.1"], ...options });
  const token = fs.readFileSync(path.join(dataDir, "admin-token"), "utf8").trim();
  return {
    server,
    token,
    dataDir,
    async stop() {
      await server.stop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** A fresh PostgreSQL schema for a bench's `--postgres` (its URL, dropped by `drop`), or nothing for SQLite. */
export async function benchDatabase(postgres: boolean): Promise<{ databaseUrl?: string; drop(): Promise<void> }> {
  if (!postgres) return { drop: async () => {} };
  const { freshSchema } = await import("../test/helpers/pg.js");
  const schema = await freshSchema();
  return { databaseUrl: schema.url, drop: schema.drop };
}

export function makeProject(source: string, name = "bench-worker"): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wy-bench-project-"));
  fs.mkdirSync(path.join(dir, "src"));
  const pkg = JSON.parse(fs.readFileSync(path.join(TEMPLATE, "package.json"), "utf8")) as Record<string, unknown>;
  const lock = JSON.parse(fs.readFileSync(path.join(TEMPLATE, "package-lock.json"), "utf8")) as { name: string; packages: Record<string, { name?: string }> };
  pkg.name = name;
  lock.name = name;
  if (lock.packages[""]) lock.packages[""].name = name;
  fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify(pkg, null, 2));
  fs.writeFileSync(path.join(dir, "package-lock.json"), JSON.stringify(lock, null, 2));
  fs.writeFileSync(path.join(dir, "src", "index.ts"), source);
  return dir;
}

/** `ntn workers deploy` in `dir` (a subprocess: the server runs in this process); the worker id and wall time. */
export async function deploy(bench: BenchServer, dir: string, name?: string): Promise<{ workerId: string; ms: number }> {
  const env = {
    PATH: process.env.PATH ?? "",
    HOME: dir,
    XDG_CONFIG_HOME: path.join(dir, ".config"),
    NOTION_API_BASE_URL: bench.server.url,
    NOTION_API_TOKEN: bench.token,
  };
  const t0 = performance.now();
  const child = spawn(process.execPath, [NTN, "workers", "deploy", ...(name ? ["--name", name] : [])], { cwd: dir, env, stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  const ms = performance.now() - t0;
  if (code !== 0) throw new Error(`deploy failed: ${stderr}`);
  const workerId = (JSON.parse(fs.readFileSync(path.join(dir, "workers.json"), "utf8")) as { workerId: string }).workerId;
  return { workerId, ms };
}

export const TRIVIAL_TOOL = `import { Worker } from "@notionhq/workers";
import { j } from "@notionhq/workers/schema-builder";
const worker = new Worker();
export default worker;
worker.tool("ping", { title: "Ping", description: "Answers at once", schema: j.object({}), execute: async () => ({ ok: true }) });
`;
