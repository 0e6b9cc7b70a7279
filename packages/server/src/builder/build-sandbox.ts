import { spawn } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import type { Isolation } from "../executor/isolation.js";
import { sandboxArgs, type Mount } from "../executor/namespaces.js";
import { sandboxRefused } from "../executor/sandbox.js";
import { LIMITS } from "../executor/limits.js";
import { PACKAGE_ROOT } from "../package-root.js";
import type { BuildJob, BuildResult } from "./build-entry.mjs";

/** Opens the egress gateway for one install: npm may reach the registry's host and port, nothing else. */
export type BuildEgressOpener = (
  socketPath: string,
  identity: { workspaceId: string; workerId: string },
  registry: { host: string; port: number },
) => Promise<{ close(): Promise<void> }>;

/** The programs a build runs, found once: our install entry, npm, and esbuild's binary. */
export interface BuildTools {
  entry: string;
  npmRoot: string;
  npmCli: string;
  /** esbuild's native binary (static): a bundle runs it alone, without Node. */
  esbuild: string;
  /** CA files npm must trust (NODE_EXTRA_CA_CERTS of the server), mounted read-only. */
  caFile: string | undefined;
}

export function findBuildTools(env: NodeJS.ProcessEnv = process.env): BuildTools {
  const entry = path.join(PACKAGE_ROOT, "dist", "sandbox", "build.mjs");
  const require = createRequire(path.join(PACKAGE_ROOT, "package.json"));
  const esbuildDir = path.dirname(require.resolve("esbuild/package.json"));
  let esbuild = path.join(esbuildDir, "bin", "esbuild");
  try {
    // The platform package holds the binary; esbuild's own bin/esbuild may be a JS shim.
    const fromEsbuild = createRequire(path.join(esbuildDir, "package.json"));
    esbuild = fromEsbuild.resolve(`@esbuild/${process.platform}-${os.arch()}/bin/esbuild`);
  } catch {
    // esbuild's install put the binary in its own package
  }
  const npmCli = findNpmCli(env);
  const caFile = env.NODE_EXTRA_CA_CERTS && fs.existsSync(env.NODE_EXTRA_CA_CERTS) ? fs.realpathSync(env.NODE_EXTRA_CA_CERTS) : undefined;
  return { entry, npmRoot: path.dirname(path.dirname(npmCli)), npmCli, esbuild: fs.realpathSync(esbuild), caFile };
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

/** One command of a build, in namespaces when the server has them, as the workspace's uid. */
export interface SandboxedCommand {
  isolation: Isolation;
  user: { uid: number; gid: number } | undefined;
  /** Inside namespaces: what the command sees, and the command as it sees it. */
  mounts: Mount[];
  tmpfs?: { path: string; bytes: number }[];
  command: string[];
  cwd: string;
  /** Without namespaces: the same command on the host's paths. */
  plain: { command: string[]; cwd: string };
  /** The whole environment: nothing of the server's reaches a build. */
  env: Record<string, string>;
  timeoutMs: number;
  cpuCores: number;
  onLine(stream: "stdout" | "stderr", line: string): void;
}

/** Runs it to the end (or its time limit); answers the exit code. */
export async function runSandboxed(run: SandboxedCommand): Promise<number> {
  const { isolation, user } = run;
  if (!isolation.host && isolation.refusal) throw sandboxRefused(isolation.refusal);
  const namespaces = isolation.host;
  const [file, ...args] = namespaces
    ? [namespaces.bwrap, ...sandboxArgs(namespaces, { mounts: run.mounts, user, infoFd: 3, tmpfs: run.tmpfs ?? [], cwd: run.cwd, command: run.command })]
    : run.plain.command;
  return new Promise<number>((resolve) => {
    const child = spawn(file!, args, {
      cwd: namespaces ? "/" : run.plain.cwd,
      env: run.env,
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
    forward(child.stdout!, (line) => run.onLine("stdout", line));
    forward(child.stderr!, (line) => run.onLine("stderr", line));
    const timer = setTimeout(() => {
      run.onLine("stderr", `The step did not finish within ${Math.round(run.timeoutMs / 60_000)} minutes and was stopped.`);
      child.kill("SIGKILL");
    }, run.timeoutMs);
    child.on("error", (error) => {
      clearTimeout(timer);
      run.onLine("stderr", `Could not start the build: ${error.message}`);
      resolve(127);
    });
    child.on("close", (exit) => {
      clearTimeout(timer);
      group?.remove();
      resolve(exit ?? 1);
    });
  });
}

/** Where an install sees its files inside the namespaces. */
const INSIDE = {
  entry: "/workyard/build.mjs",
  project: "/project",
  out: "/out",
  npmCache: "/npm-cache",
  home: "/home/build",
  tmp: "/tmp",
  egressSocket: "/run/workyard/egress.sock",
} as const;

export interface InstallRun {
  isolation: Isolation;
  tools: BuildTools;
  user: { uid: number; gid: number } | undefined;
  identity: { workspaceId: string; workerId: string };
  projectDir: string;
  outDir: string;
  npmCacheDir: string;
  lockfile: boolean;
  registry: string;
  egress: BuildEgressOpener | undefined;
  socketDir: string;
  cpuCores: number;
  timeoutMs: number;
  onLog(stream: "stdout" | "stderr", line: string): void;
}

/**
 * `npm ci` (or `npm install` without a lockfile) into the project's node_modules, as the
 * workspace's uid, with an environment and an npm configuration of our making and the gateway as
 * npm's only way out.
 */
export async function installDependencies(run: InstallRun): Promise<BuildResult> {
  const { isolation, tools, user } = run;
  if (!isolation.host && isolation.refusal) throw sandboxRefused(isolation.refusal);
  for (const dir of [run.outDir, run.npmCacheDir]) fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (user) {
    // The workspace's uid writes node_modules into the project, its result into out, and its
    // cache (its own from the start: walked only if something else ever wrote there).
    chownTree(run.projectDir, user);
    chownTree(run.outDir, user);
    if (fs.statSync(run.npmCacheDir).uid !== user.uid) chownTree(run.npmCacheDir, user);
  }
  const registryUrl = new URL(run.registry);
  const registry = { host: registryUrl.hostname, port: Number(registryUrl.port || (registryUrl.protocol === "https:" ? 443 : 80)) };
  const socketPath = path.join(run.socketDir, `build-${process.pid}-${Math.random().toString(36).slice(2, 10)}.sock`);
  const egress = run.egress ? await run.egress(socketPath, run.identity, registry) : undefined;
  const home = fs.mkdtempSync(path.join(os.tmpdir(), "wy-build-home-"));
  if (user) fs.chownSync(home, user.uid, user.gid);
  try {
    const common = { lockfile: run.lockfile, registry: run.registry, npmCli: tools.npmCli };
    const inside: BuildJob = { ...common, project: INSIDE.project, out: INSIDE.out, npmCache: INSIDE.npmCache, egressSocket: INSIDE.egressSocket, home: INSIDE.home };
    const onHost: BuildJob = { ...common, project: run.projectDir, out: run.outDir, npmCache: run.npmCacheDir, egressSocket: socketPath, home };
    // Chosen by name: nothing of the server's environment reaches npm.
    const env: Record<string, string> = { PATH: "/usr/bin:/bin", NODE_OPTIONS: "", TMPDIR: isolation.host ? INSIDE.tmp : os.tmpdir() };
    if (tools.caFile) env.NODE_EXTRA_CA_CERTS = tools.caFile;
    const mounts: Mount[] = [
      { source: tools.entry, target: INSIDE.entry },
      { source: tools.npmRoot, target: tools.npmRoot },
      { source: run.projectDir, target: INSIDE.project, writable: true },
      { source: run.outDir, target: INSIDE.out, writable: true },
      { source: run.npmCacheDir, target: INSIDE.npmCache, writable: true },
      { source: home, target: INSIDE.home, writable: true },
    ];
    if (tools.caFile) mounts.push({ source: tools.caFile, target: tools.caFile });
    if (egress) mounts.push({ source: socketPath, target: INSIDE.egressSocket, writable: true });
    const code = await runSandboxed({
      isolation,
      user,
      mounts,
      tmpfs: [{ path: INSIDE.tmp, bytes: LIMITS.buildTmpBytes }],
      command: [isolation.host?.node ?? process.execPath, INSIDE.entry, JSON.stringify(inside)],
      cwd: INSIDE.project,
      plain: { command: [process.execPath, tools.entry, JSON.stringify(onHost)], cwd: run.projectDir },
      env,
      timeoutMs: run.timeoutMs,
      cpuCores: run.cpuCores,
      onLine: (stream, line) => {
        if (!/Unknown (user|env|project) config "nodedir"/.test(line)) run.onLog(stream, line);
      },
    });
    try {
      return JSON.parse(fs.readFileSync(path.join(run.outDir, "result.json"), "utf8")) as BuildResult;
    } catch {
      return { ok: false, error: `The install ended without a result (exit code ${code}).` };
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
    for (const line of lines) if (line.trim()) onLine(line);
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
