import fs from "node:fs";
import os from "node:os";
import path from "node:path";

/**
 * CPU limits for sandboxed processes, where the server may create control groups (root, with the
 * cpu controller of cgroup v2 or v1 mounted writable): all of them together share one group that
 * weighs half of what the server does and may use every core but half of one, so /healthz and the
 * API keep answering however many runs spin; each process, once loaded, also gets a group of its
 * own with a quota of `cores` CPUs (and a cap on its tasks, so native code cannot fork-bomb the
 * machine). Loading is left out of the per-process quota: V8 compiles on helper threads then, and a
 * one-core quota would only slow every cold start. Elsewhere the caller falls back to a lower
 * priority.
 */
export interface CpuLimiter {
  /** What enforces the limit, for the start banner. */
  readonly kind: "cgroup v2" | "cgroup v1";
  /** Puts a process in the group all sandboxed processes share. */
  admit(pid: number): void;
  /** Puts a process (all its threads) under a quota of `cores` CPUs; remove() when it is gone. */
  confine(name: string, pid: number, cores: number): { remove(): void };
}

const PERIOD_US = 100_000;
/** What all sandboxed processes together may use: every core but half of one (at least one). */
const SHARED_CORES = Math.max(1, os.availableParallelism() - 0.5);
/** Threads a sandboxed Node process may have: V8, libuv's pool, and room to spare. */
const TASKS_MAX = 128;

export function createCpuLimiter(root = "/sys/fs/cgroup"): CpuLimiter | undefined {
  if (process.platform !== "linux" || typeof process.getuid !== "function" || process.getuid() !== 0) return undefined;
  removeStaleGroups(root);
  return cgroupV2(root) ?? cgroupV1(root);
}

/** Groups of servers that are gone (killed before their stop): emptied by the kernel, removed here. */
function removeStaleGroups(root: string): void {
  for (const parent of [root, path.join(root, "cpu"), path.join(root, "pids")]) {
    let names: string[];
    try {
      names = fs.readdirSync(parent).filter((name) => /^workyard-\d+$/.test(name));
    } catch {
      continue;
    }
    for (const name of names) {
      const pid = Number(name.slice("workyard-".length));
      if (pid === process.pid || alive(pid)) continue;
      const dir = path.join(parent, name);
      try {
        for (const child of fs.readdirSync(dir, { withFileTypes: true })) if (child.isDirectory()) fs.rmdirSync(path.join(dir, child.name));
        fs.rmdirSync(dir);
      } catch {
        // a group still holding a process: left for the next start
      }
    }
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

function tryMkdir(dir: string): boolean {
  try {
    fs.mkdirSync(dir, { recursive: true });
    return true;
  } catch {
    return false;
  }
}

function write(file: string, value: string): boolean {
  try {
    fs.writeFileSync(file, value);
    return true;
  } catch {
    return false;
  }
}

function removeLater(dir: string): void {
  // A group can go once its last task has exited, which the kernel notes a moment after.
  const attempt = (left: number) => {
    try {
      fs.rmdirSync(dir);
    } catch {
      if (left > 0) setTimeout(() => attempt(left - 1), 200).unref();
    }
  };
  attempt(10);
}

function cgroupV2(root: string): CpuLimiter | undefined {
  let controllers: string;
  try {
    controllers = fs.readFileSync(path.join(root, "cgroup.controllers"), "utf8");
  } catch {
    return undefined;
  }
  if (!/\bcpu\b/.test(controllers)) return undefined;
  const base = path.join(root, `workyard-${process.pid}`);
  if (!tryMkdir(base)) return undefined;
  write(path.join(root, "cgroup.subtree_control"), "+cpu +pids");
  if (!write(path.join(base, "cgroup.subtree_control"), "+cpu +pids")) {
    removeLater(base);
    return undefined;
  }
  write(path.join(base, "cpu.weight"), "50");
  write(path.join(base, "cpu.max"), `${Math.round(SHARED_CORES * PERIOD_US)} ${PERIOD_US}`);
  // v2 keeps processes out of inner groups that have children: the shared ones wait in a leaf.
  const shared = path.join(base, "shared");
  tryMkdir(shared);
  return {
    kind: "cgroup v2",
    admit(pid) {
      write(path.join(shared, "cgroup.procs"), String(pid));
    },
    confine(name, pid, cores) {
      const dir = path.join(base, name);
      if (!tryMkdir(dir)) return { remove() {} };
      write(path.join(dir, "cpu.max"), `${Math.round(cores * PERIOD_US)} ${PERIOD_US}`);
      write(path.join(dir, "pids.max"), String(TASKS_MAX));
      write(path.join(dir, "cgroup.procs"), String(pid));
      return { remove: () => removeLater(dir) };
    },
  };
}

function cgroupV1(root: string): CpuLimiter | undefined {
  const cpuRoot = path.join(root, "cpu");
  if (!fs.existsSync(path.join(cpuRoot, "cpu.cfs_quota_us"))) return undefined;
  const base = path.join(cpuRoot, `workyard-${process.pid}`);
  if (!tryMkdir(base)) return undefined;
  write(path.join(base, "cpu.shares"), "512");
  write(path.join(base, "cpu.cfs_period_us"), String(PERIOD_US));
  write(path.join(base, "cpu.cfs_quota_us"), String(Math.round(SHARED_CORES * PERIOD_US)));
  const pidsRoot = path.join(root, "pids");
  const pidsBase = fs.existsSync(path.join(pidsRoot, "cgroup.procs")) && tryMkdir(path.join(pidsRoot, `workyard-${process.pid}`)) ? path.join(pidsRoot, `workyard-${process.pid}`) : undefined;
  return {
    kind: "cgroup v1",
    admit(pid) {
      write(path.join(base, "cgroup.procs"), String(pid));
    },
    confine(name, pid, cores) {
      const dir = path.join(base, name);
      if (!tryMkdir(dir)) return { remove() {} };
      write(path.join(dir, "cpu.cfs_period_us"), String(PERIOD_US));
      write(path.join(dir, "cpu.cfs_quota_us"), String(Math.round(cores * PERIOD_US)));
      write(path.join(dir, "cgroup.procs"), String(pid));
      let pidsDir: string | undefined;
      if (pidsBase) {
        pidsDir = path.join(pidsBase, name);
        if (tryMkdir(pidsDir)) {
          write(path.join(pidsDir, "pids.max"), String(TASKS_MAX));
          write(path.join(pidsDir, "cgroup.procs"), String(pid));
        }
      }
      return {
        remove() {
          removeLater(dir);
          if (pidsDir) removeLater(pidsDir);
        },
      };
    },
  };
}

/** Removes this server's (now empty) parent groups at stop. */
export function removeCpuGroups(root = "/sys/fs/cgroup"): void {
  for (const dir of [
    path.join(root, `workyard-${process.pid}`, "shared"),
    path.join(root, `workyard-${process.pid}`),
    path.join(root, "cpu", `workyard-${process.pid}`),
    path.join(root, "pids", `workyard-${process.pid}`),
  ]) {
    try {
      fs.rmdirSync(dir);
    } catch {
      // absent, or a group still draining: the kernel keeps it until then
    }
  }
}
