import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { createCpuLimiter, type CpuLimiter } from "./cgroup.js";
import { findSandboxHost, sandboxArgs, SandboxUnavailable, type SandboxHost } from "./namespaces.js";

/**
 * What this server can give worker processes, decided once at start:
 * - `namespaces`: bubblewrap works here. Each process has its own namespaces; as root each
 *   workspace runs as a uid of its own (config.workerUids), as another user a user namespace
 *   keeps them apart.
 * - `none`: no bubblewrap, not Linux, or namespaces refused. Workers get Node's permission model
 *   and, as root, a uid per workspace where the data dir lets other users through. `--isolation
 *   strict` refuses to start instead.
 */
export interface Isolation {
  kind: "namespaces" | "none";
  host: SandboxHost | undefined;
  /** The server runs as root: workspaces get uids of their own. */
  privileged: boolean;
  /** Why the isolation is not complete (empty when it is). */
  problems: string[];
  /** Without namespaces, as root, when worker processes cannot run as other users: why runs are refused. */
  refusal: string | undefined;
  cpu: CpuLimiter | undefined;
  /** The uid and gid a workspace's builds and workers run as; undefined: the server's own. */
  userFor(sandboxIndex: number): { uid: number; gid: number } | undefined;
  /** One line for the start banner. */
  describe(): string;
}

export class IsolationRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = "IsolationRefused";
  }
}

const INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap) and allow unprivileged user namespaces, or run the server as root";

export async function detectIsolation(options: {
  mode: "strict" | "standard";
  workerUids: { first: number; last: number };
  dataDir: string;
  env?: NodeJS.ProcessEnv;
}): Promise<Isolation> {
  const privileged = typeof process.getuid === "function" && process.getuid() === 0;
  const problems: string[] = [];
  let host: SandboxHost | undefined;
  try {
    host = findSandboxHost({ privileged, env: options.env });
    const probe = await probeSandbox(host, privileged ? { uid: options.workerUids.first, gid: options.workerUids.first } : undefined);
    if (probe) {
      problems.push(`bubblewrap cannot create namespaces here (${probe})`);
      host = undefined;
    }
  } catch (error) {
    if (!(error instanceof SandboxUnavailable)) throw error;
    problems.push(error.message);
  }
  const { first, last } = options.workerUids;
  const userFor = (index: number) => {
    if (!privileged) return undefined;
    const uid = first + index;
    if (uid > last) {
      throw new IsolationRefused(`The workspace's uid ${uid} is beyond --worker-uids ${first}-${last}; widen the range.`);
    }
    return { uid, gid: uid };
  };
  let refusal: string | undefined;
  if (!host && privileged) {
    if (traversable(options.dataDir)) {
      // Without namespaces, workspaces' uids reach their files through the data dir itself: they
      // may pass through it (not list it); what is theirs is group-readable by them alone.
      fs.mkdirSync(options.dataDir, { recursive: true, mode: 0o711 });
      fs.chmodSync(options.dataDir, 0o711);
      for (const sub of ["deployments", "builds", "scratch"]) {
        fs.mkdirSync(path.join(options.dataDir, sub), { recursive: true });
        fs.chmodSync(path.join(options.dataDir, sub), 0o711);
      }
    } else {
      refusal = `Worker processes cannot run apart from the server here: without bubblewrap they would run as other users, who cannot reach ${options.dataDir}.`;
      problems.push(`${refusal} Runs and builds are refused`);
    }
  }
  if (problems.length > 0 && options.mode === "strict") {
    throw new IsolationRefused(`--isolation strict: refusing to start: ${sentences(problems)}. To fix: ${INSTALL_HINT}.`);
  }
  const cpu = createCpuLimiter();
  return {
    kind: host ? "namespaces" : "none",
    host,
    privileged,
    problems,
    refusal,
    cpu,
    userFor,
    describe() {
      if (!host) return `workers are NOT isolated: ${sentences(problems)}. To fix: ${INSTALL_HINT}; --isolation strict refuses to start without it.`;
      const who = privileged ? `as uids ${first}-${last}, one per workspace` : "in user namespaces";
      const limits = cpu ? `CPU limited by ${cpu.kind}` : "CPU limited by priority and a CPU-time limit";
      return `Isolation: workers and builds run in their own namespaces (bubblewrap) ${who}; network through the egress gateway only; ${limits}.`;
    },
  };
}

/** Problems as one run of clauses: "a; b". */
function sentences(problems: string[]): string {
  return problems.map((p) => p.replace(/\.$/, "")).join("; ");
}

/** Starts `node -e 0` in a sandbox as workers would be; answers why it failed, or undefined. */
function probeSandbox(host: SandboxHost, user: { uid: number; gid: number } | undefined): Promise<string | undefined> {
  const args = sandboxArgs(host, { mounts: [], user, command: [host.node, "-e", "0"], cwd: "/" });
  return new Promise((resolve) => {
    const child = spawn(host.bwrap, args, { stdio: ["ignore", "ignore", "pipe"], env: {} });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")));
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    child.on("error", (error) => {
      clearTimeout(timer);
      resolve(error.message);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve(code === 0 ? undefined : stderr.trim().split("\n").pop() || `exit ${signal ?? code}`);
    });
  });
}

/** Whether every ancestor of dir lets other users through (o+x). */
export function traversable(dir: string): boolean {
  for (let current = path.dirname(path.resolve(dir)); ; current = path.dirname(current)) {
    try {
      if ((fs.statSync(current).mode & 0o001) === 0) return false;
    } catch {
      return false;
    }
    if (path.dirname(current) === current) return true;
  }
}
