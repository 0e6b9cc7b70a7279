import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { OUR_NTN } from "./paths.js";
import { DEFAULT_REGISTRY, seedInstalledFixture, seedServerNpmCache } from "./fixture-worker.js";
import { tempDir } from "./tmp.js";

export interface ServerProcess {
  url: string;
  pid: number;
  dataDir: string;
  /** Everything it wrote to stdout and stderr so far. */
  output(): string;
  /** Sends a signal and waits for the process to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Resolves when the process exits (by itself or killed). */
  exited: Promise<number | null>;
}

/**
 * `ntn server` as a real process on 127.0.0.1, port 0, as an operator would run it: several of
 * them share one PostgreSQL (DATABASE_URL) and one master key (WORKYARD_MASTER_KEY), each with a
 * data dir of its own, like separate machines. The caller kills it (or `stop` does).
 */
export async function startServerProcess(options: {
  databaseUrl?: string;
  masterKey?: string;
  dataDir?: string;
  args?: string[];
  env?: Record<string, string>;
  /** Runs the background refresher (leaves out `--no-background-refresh`). */
  backgroundRefresh?: boolean;
  /** Runs the server as this user (the test runs as root): its data dir and home are given to it. */
  user?: { uid: number; gid: number };
  /** The fixture's installed tree in place (default): false for tests of the install itself. */
  installedFixture?: boolean;
}): Promise<ServerProcess> {
  const tmp = options.dataDir ? undefined : tempDir("wy-proc-");
  const dataDir = options.dataDir ?? tmp!.dir;
  const home = path.join(dataDir, "home");
  fs.mkdirSync(home, { recursive: true });
  seedServerNpmCache(dataDir, options.user);
  // A restarted process finds the link it had; the environment below names no other registry.
  const seeded = fs.existsSync(path.join(dataDir, "deps"));
  if (options.installedFixture !== false && !seeded && !options.env?.WORKYARD_NPM_REGISTRY) seedInstalledFixture(dataDir, DEFAULT_REGISTRY, options.user);
  if (options.user) {
    for (const dir of [dataDir, home]) fs.chownSync(dir, options.user.uid, options.user.gid);
  }
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    // The machine's own TLS setup, as an operator's environment has it (builds reach the registry with it).
    ...(process.env.NODE_EXTRA_CA_CERTS ? { NODE_EXTRA_CA_CERTS: process.env.NODE_EXTRA_CA_CERTS } : {}),
    HOME: home,
    XDG_CONFIG_HOME: path.join(home, ".config"),
    ...(options.databaseUrl ? { DATABASE_URL: options.databaseUrl } : {}),
    ...(options.masterKey ? { WORKYARD_MASTER_KEY: options.masterKey } : {}),
    ...options.env,
  };
  const child: ChildProcess = spawn(
    process.execPath,
    [
      OUR_NTN,
      "server",
      "--port",
      "0",
      "--data-dir",
      dataDir,
      ...(options.backgroundRefresh ? [] : ["--no-background-refresh"]),
      // The tests' providers listen on 127.0.0.1 (see start-server.ts), unless the test sets rules.
      ...(options.args?.includes("--egress-allow") ? [] : ["--egress-allow", "127.0.0.1"]),
      ...(options.args ?? []),
    ],
    { env, stdio: ["ignore", "pipe", "pipe"], ...(options.user ? { uid: options.user.uid, gid: options.user.gid } : {}) },
  );
  let output = "";
  child.stdout!.on("data", (c: Buffer) => (output += c.toString("utf8")));
  child.stderr!.on("data", (c: Buffer) => (output += c.toString("utf8")));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`ntn server did not start:\n${output}`)), 60_000);
    const check = () => {
      const match = /Listening on (http:\/\/\S+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]!);
      }
    };
    child.stdout!.on("data", check);
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`ntn server exited:\n${output}`));
    });
  });
  return {
    url,
    pid: child.pid!,
    dataDir,
    output: () => output,
    exited,
    async kill(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
      if (tmp && signal !== "SIGKILL") tmp.cleanup();
    },
  };
}

/** POSTs an action with a token; answers status and parsed body. */
export async function callAction(url: string, action: string, body: unknown, token?: string): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(`${url}/api/v3/workers${action}`, { method: "POST", headers, body: JSON.stringify(body) });
  const text = await response.text();
  try {
    return { status: response.status, body: JSON.parse(text) };
  } catch {
    return { status: response.status, body: text };
  }
}
