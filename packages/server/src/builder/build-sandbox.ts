import { spawn } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import type { Isolation } from "../executor/isolation.js";
import { sandboxArgs, type Mount } from "../executor/namespaces.js";
import { sandboxRefused } from "../executor/sandbox.js";
import { PACKAGE_ROOT } from "../package-root.js";
import type { BuildJob, BuildResult } from "./build-entry.mjs";

/** Opens the egress gateway for one build: npm may reach the registry's host and port, nothing else. */
export type BuildEgressOpener = (
  socketPath: string,
  identity: { workspaceId: string; workerId: string },
  registry: { host: string; port: number },
) => Promise<{ close(): Promise<void> }>;

/** The programs a build runs, found once: our entry, esbuild, and npm. */
export interface BuildTools {
  entry: string;
  esbuildDir: string;
  /** The package holding esbuild's binary for this platform (@esbuild/linux-x64, ...). */
  esbuildBinaryDir: string | undefined;
  npmRoot: string;
  npmCli: string;
  /** CA files npm must trust (NODE_EXTRA_CA_CERTS of the server), mounted read-only. */
  caFile: string | undefined;
}

export function findBuildTools(env: NodeJS.ProcessEnv = process.env): BuildTools {
  const entry = path.join(PACKAGE_ROOT, "dist", "sandbox", "build.mjs");
  const require = createRequire(path.join(PACKAGE_ROOT, "package.json"));
  const esbuildDir = path.dirname(require.resolve("esbuild/package.json"));
  let esbuildBinaryDir: string | undefined;
  try {
    const fromEsbuild = createRequire(path.join(esbuildDir, "package.json"));
    esbuildBinaryDir = path.dirname(fromEsbuild.resolve(`@esbuild/${process.platform}-${os.arch()}/package.json`));
  } catch {
    // esbuild's own install put the binary inside its package (bin/esbuild)
  }
  const npmCli = findNpmCli(env);
  const caFile = env.NODE_EXTRA_CA_CERTS && fs.existsSync(env.NODE_EXTRA_CA_CERTS) ? fs.realpathSync(env.NODE_EXTRA_CA_CERTS) : undefined;
  return { entry, esbuildDir, esbuildBinaryDir, npmRoot: path.dirname(path.dirname(npmCli)), npmCli, caFile };
}

/** npm's own CLI script (`<npm>/bin/npm-cli.js`), from the npm on PATH. */
function findNpmCli(env: NodeJS.ProcessEnv): string {
  for (const dir of (env.PATH ?? "").split(":").concat(["/usr/bin", "/usr/local/bin"])) {
    if (!dir) continue;
    try {
      const real = fs.realpathSync(path.join(dir, "npm"));
      if (real.endsWith(path.join("bin", "npm-cli.js"))) return real;
    } catch {
      // not here
    }
  }
  const beside = path.join(path.dirname(process.execPath), "..", "lib", "node_modules", "npm", "bin", "npm-cli.js");
  if (fs.existsSync(beside)) return fs.realpathSync(beside);
  throw new Error("npm is not installed: builds need npm beside Node.");
}

/** Where a build sees its files inside the namespaces. */
const INSIDE = {
  entry: "/workyard/build.mjs",
  esbuild: "/workyard/node_modules/esbuild",
  project: "/project",
  out: "/out",
  npmCache: "/npm-cache",
  home: "/home/build",
  tmp: "/tmp",
  egressSocket: "/run/workyard/egress.sock",
} as const;

export interface BuildRun {
  isolation: Isolation;
  tools: BuildTools;
  user: { uid: number; gid: number } | undefined;
  identity: { workspaceId: string; workerId: string };
  projectDir: string;
  outDir: string;
  npmCacheDir: string;
  install: boolean;
  lockfile: boolean;
  bundle: boolean;
  registry: string;
  egress: BuildEgressOpener | undefined;
  socketDir: string;
  cpuCores: number;
  timeoutMs: number;
  onLog(stream: "stdout" | "stderr", line: string): void;
}

/**
 * Runs one build step (install and/or bundle) as the workspace's uid, in namespaces when this
 * server has them, with an environment of our making and the gateway as npm's only way out.
 */
export async function runBuildSandbox(run: BuildRun): Promise<BuildResult> {
  const { isolation, tools, user } = run;
  if (!isolation.host && isolation.refusal) throw sandboxRefused(isolation.refusal);
  for (const dir of [run.outDir, run.npmCacheDir]) fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (user) {
    // The workspace's uid writes node_modules into the project, the bundle into out, and its
    // cache (its own from the start: walked only if something else ever wrote there).
    chownTree(run.projectDir, user);
    chownTree(run.outDir, user);
    if (fs.statSync(run.npmCacheDir).uid !== user.uid) chownTree(run.npmCacheDir, user);
  }
  const registryUrl = new URL(run.registry);
  const registry = { host: registryUrl.hostname, port: Number(registryUrl.port || (registryUrl.protocol === "https:" ? 443 : 80)) };
  const socketPath = path.join(run.socketDir, `build-${process.pid}-${Math.random().toString(36).slice(2, 10)}.sock`);
  const egress = run.egress && run.install ? await run.egress(socketPath, run.identity, registry) : undefined;
  const home = fs.mkdtempSync(path.join(os.tmpdir(), "wy-build-home-"));
  if (user) fs.chownSync(home, user.uid, user.gid);
  try {
    const namespaces = isolation.host;
    const job: BuildJob = namespaces
      ? {
          project: INSIDE.project,
          out: INSIDE.out,
          install: run.install,
          lockfile: run.lockfile,
          bundle: run.bundle,
          registry: run.registry,
          npmCli: tools.npmCli,
          npmCache: INSIDE.npmCache,
          egressSocket: INSIDE.egressSocket,
          home: INSIDE.home,
        }
      : {
          project: run.projectDir,
          out: run.outDir,
          install: run.install,
          lockfile: run.lockfile,
          bundle: run.bundle,
          registry: run.registry,
          npmCli: tools.npmCli,
          npmCache: run.npmCacheDir,
          egressSocket: socketPath,
          home,
        };
    // Chosen by name: nothing of the server's environment reaches npm or the build.
    const env: Record<string, string> = { PATH: "/usr/bin:/bin", HOME: job.home, NODE_OPTIONS: "", TMPDIR: namespaces ? INSIDE.tmp : os.tmpdir() };
    if (tools.caFile) env.NODE_EXTRA_CA_CERTS = tools.caFile;

    let file: string;
    let args: string[];
    if (namespaces) {
      const mounts: Mount[] = [
        { source: tools.entry, target: INSIDE.entry },
        { source: tools.esbuildDir, target: INSIDE.esbuild },
        { source: tools.npmRoot, target: tools.npmRoot },
        { source: run.projectDir, target: INSIDE.project, writable: true },
        { source: run.outDir, target: INSIDE.out, writable: true },
        { source: run.npmCacheDir, target: INSIDE.npmCache, writable: true },
        { source: home, target: INSIDE.home, writable: true },
      ];
      if (tools.esbuildBinaryDir) {
        mounts.push({ source: tools.esbuildBinaryDir, target: `/workyard/node_modules/${path.basename(path.dirname(tools.esbuildBinaryDir))}/${path.basename(tools.esbuildBinaryDir)}` });
      }
      if (tools.caFile) mounts.push({ source: tools.caFile, target: tools.caFile });
      if (egress) mounts.push({ source: socketPath, target: INSIDE.egressSocket, writable: true });
      file = namespaces.bwrap;
      args = sandboxArgs(namespaces, {
        mounts,
        user,
        infoFd: 3,
        tmpfs: [INSIDE.tmp],
        cwd: INSIDE.project,
        command: [namespaces.node, INSIDE.entry, JSON.stringify(job)],
      });
    } else {
      file = process.execPath;
      args = [tools.entry, JSON.stringify(job)];
    }
    const code = await new Promise<number>((resolve) => {
      const child = spawn(file, args, {
        cwd: namespaces ? "/" : run.projectDir,
        env,
        stdio: ["ignore", "pipe", "pipe", "pipe"],
        ...(user && !namespaces ? { uid: user.uid, gid: user.gid } : {}),
      });
      let group: { remove(): void } | undefined;
      const confine = (pid: number) => {
        group = isolation.cpu?.confine(`b${process.pid}-${pid}`, pid, run.cpuCores);
      };
      if (!namespaces && child.pid) confine(child.pid);
      // bubblewrap names the process it started (as the host sees it) on descriptor 3.
      let info = "";
      const infoStream = child.stdio[3] as NodeJS.ReadableStream | null;
      infoStream?.on("data", (chunk: Buffer) => {
        info += chunk.toString("utf8");
        const match = /"child-pid":\s*(\d+)/.exec(info);
        if (match && !group) confine(Number(match[1]));
      });
      infoStream?.on("error", () => {});
      forward(child.stdout!, (line) => run.onLog("stdout", line));
      forward(child.stderr!, (line) => run.onLog("stderr", line));
      const timer = setTimeout(() => {
        run.onLog("stderr", `The build did not finish within ${Math.round(run.timeoutMs / 60_000)} minutes and was stopped.`);
        child.kill("SIGKILL");
      }, run.timeoutMs);
      child.on("error", (error) => {
        clearTimeout(timer);
        run.onLog("stderr", `Could not start the build: ${error.message}`);
        resolve(127);
      });
      child.on("close", (exit) => {
        clearTimeout(timer);
        group?.remove();
        resolve(exit ?? 1);
      });
    });
    try {
      return JSON.parse(fs.readFileSync(path.join(run.outDir, "result.json"), "utf8")) as BuildResult;
    } catch {
      return { ok: false, error: `The build process ended without a result (exit code ${code}).` };
    }
  } finally {
    await egress?.close();
    fs.rmSync(home, { recursive: true, force: true });
  }
}

function forward(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let rest = "";
  stream.on("data", (chunk: Buffer) => {
    const lines = (rest + chunk.toString("utf8")).split("\n");
    rest = lines.pop() ?? "";
    for (const line of lines) if (line.trim() && !/Unknown (user|env|project) config "nodedir"/.test(line)) onLine(line);
  });
  stream.on("end", () => {
    if (rest.trim()) onLine(rest);
  });
}

/** Gives a folder and everything in it to a uid (builds as root hand them to the workspace). */
export function chownTree(dir: string, user: { uid: number; gid: number }): void {
  const visit = (p: string) => {
    const stat = fs.lstatSync(p);
    if (stat.uid !== user.uid || stat.gid !== user.gid) fs.lchownSync(p, user.uid, user.gid);
    if (stat.isDirectory()) for (const name of fs.readdirSync(p)) visit(path.join(p, name));
  };
  if (fs.existsSync(dir)) visit(dir);
}
