import { spawn, type ChildProcess } from "node:child_process";
import { createRequire } from "node:module";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { PACKAGE_ROOT } from "../package-root.js";
import { AppError } from "../errors.js";
import type { Isolation } from "./isolation.js";
import { EXIT_CODES, LIMITS } from "./limits.js";
import { sandboxArgs, type Mount, type SandboxHost } from "./namespaces.js";
import { encodeMessage, LineDecoder, type EnvPatch, type FromChild, type SerializedError, type ToChild } from "./protocol.js";

/**
 * The sandbox entry as built (child.mts, bundled with the egress client into one file by
 * scripts/bundle-server.mjs), whether this runs from source, dist or the bundle.
 */
const BUILT_CHILD_ENTRY = path.join(PACKAGE_ROOT, "dist", "sandbox", "worker.mjs");
/** undici's package, which the entry loads on a worker's first fetch (egress/client.ts). */
const UNDICI_DIR = path.dirname(createRequire(path.join(PACKAGE_ROOT, "package.json")).resolve("undici/package.json"));

/** The built entry where it is installed (namespaces mount it; no copy needed). */
export function childEntry(): string {
  return BUILT_CHILD_ENTRY;
}

/**
 * Copies the entry into the data dir (world-readable), so a worker process running as another
 * user can read it wherever the server itself is installed.
 */
export function installChildEntry(runtimeDir: string): string {
  fs.mkdirSync(runtimeDir, { recursive: true, mode: 0o755 });
  fs.chmodSync(runtimeDir, 0o755);
  const target = path.join(runtimeDir, "child.mjs");
  const tmp = `${target}.${process.pid}.tmp`;
  fs.copyFileSync(BUILT_CHILD_ENTRY, tmp);
  fs.chmodSync(tmp, 0o644);
  fs.renameSync(tmp, target);
  return target;
}

export interface SandboxSpec {
  /** The entry script (installChildEntry). */
  entry: string;
  /** Directory of the deployment on disk: index.mjs, its map, and a node_modules link. */
  bundleDir: string;
  /** Real path of the installed tree the node_modules link points at. */
  nodeModules: string;
  /** A directory of its own the process may write to (created and removed here). */
  scratchDir: string;
  /** The worker's secrets (reserved names already left out), as the process environment at load. */
  env: Record<string, string>;
  memoryMb: number;
  /** What this server can give the process (namespaces, uids, a CPU limit). */
  isolation: Isolation;
  /** The workspace's own uid and gid when the server runs as root. */
  user: { uid: number; gid: number } | undefined;
  /** The egress gateway's socket for this process, on the host. */
  egressSocket: string | undefined;
  /** CPU cores the process may use. */
  cpuCores: number;
}

/** Where a worker process sees its files inside the namespaces. */
export const INSIDE = {
  runtime: "/workyard",
  entry: "/workyard/child.mjs",
  undici: "/workyard/node_modules/undici",
  bundle: "/worker/index.mjs",
  map: "/worker/index.mjs.map",
  nodeModules: "/worker/node_modules",
  scratch: "/scratch",
  egressSocket: "/run/workyard/egress.sock",
} as const;

/**
 * The worker's code failed to load (it threw, exported no Worker, or its process died while
 * loading): the worker's error, not the server's, wherever a load happens (a run, a manifest read).
 */
export class LoadError extends AppError {
  constructor(
    readonly error: SerializedError,
    readonly logs: string,
    options: { runId?: string } = {},
  ) {
    super("worker_load_failed", `The worker failed to load: ${error.message}`, {
      hint: options.runId
        ? `Its stack is in the run's logs: ntn workers runs logs ${options.runId}. Fix it and deploy again.`
        : "Fix the error in the worker's code (the build log shows its stack) and deploy again.",
      ...(options.runId ? { details: { runId: options.runId } } : {}),
    });
    this.name = "LoadError";
  }
}

export type RunOutcome =
  | { ok: true; value: unknown; exitCode: 0 }
  | {
      ok: false;
      error: SerializedError;
      exitCode: number;
      reason: "error" | "timeout" | "memory" | "crash";
      processLost: boolean;
      /** Stopped with its process at another run's time limit: nothing this run did ended it. */
      collateral?: true;
    };

export interface RunOptions {
  runId: string;
  key: string;
  input: unknown;
  env: EnvPatch;
  timeoutMs: number;
  onLog(stream: "stdout" | "stderr", data: string): void;
}

/** How long a process with a run under way may go without a turn of its event loop and still take more runs. */
const RESPONSIVE_MS = 1000;
/**
 * At a run's time limit, how long to wait for one more turn of the process's event loop (the answer
 * to a ping, which only a free loop can give) before stopping it. A turn means the loop is
 * free: the run whose limit passed is the one that never ended, and the others in the process are
 * stopped for it (collateral). No turn means a run spins, perhaps another one: blame is unknown,
 * and every run in it counts as its own failure (the safe side for retries).
 */
const TURN_WAIT_MS = 500;

interface ActiveRun {
  startedAt: number;
  /** Its own time limit passed (the message that says so): whatever it answers now, it ends so. */
  timedOut: string | undefined;
  onLog: RunOptions["onLog"];
  /** Bytes of its output the server has taken; beyond LIMITS.logBytes, dropped. */
  logBytes: number;
  logNoticeSent: boolean;
  finish(outcome: RunOutcome): void;
}

let nextProcessId = 1;

/**
 * One worker process: Node's permission model (read: this entry, the bundle, the installed tree;
 * write: a scratch dir; no child processes, worker threads or addons), a heap cap, a clean
 * environment holding only the worker's secrets, and, when the server runs as root, an
 * unprivileged user. Runs capabilities, several at once when the pool shares it.
 */
export class SandboxProcess {
  readonly id = nextProcessId++;
  manifest: unknown;
  loadMs = 0;
  private child!: ChildProcess;
  private exited = false;
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private rawStderr = "";
  /** The runs under way in this process, by run id (several when the pool shares it). */
  private readonly running = new Map<string, ActiveRun>();
  private readonly exitListeners: (() => void)[] = [];

  private constructor(readonly spec: SandboxSpec) {}

  static async start(spec: SandboxSpec): Promise<SandboxProcess> {
    const sandbox = new SandboxProcess(spec);
    await sandbox.spawn();
    return sandbox;
  }

  get alive(): boolean {
    return !this.exited;
  }

  /**
   * When the process's event loop last turned, as its messages show: a sign of life, an answer.
   * Not its output: a run that spins still prints (console writes are synchronous).
   */
  private lastTurnAt = performance.now();
  /** Called with the answer to a ping (a time limit waiting to know whether the loop is free). */
  private onPong: ((seq: number) => void) | undefined;
  private pings = 0;

  /** Set once the process is on its way out (stopped, crashed, broke the protocol): it takes no more runs. */
  private stopping = false;

  /** Whether the process may take a run: alive, and not on its way out. */
  get accepting(): boolean {
    return !this.exited && !this.stopping;
  }

  /**
   * Whether the process may take another run beside those under way: not when it has been silent
   * for a second with a run older than that (it sends a sign of life four times a second while runs
   * are under way, so its event loop is held, by a run that spins, which would hold every run given
   * to it until that one's time limit).
   */
  get responsive(): boolean {
    if (!this.accepting) return false;
    const oldest = this.running.values().next().value as ActiveRun | undefined;
    if (!oldest) return true;
    const now = performance.now();
    return now - this.lastTurnAt < RESPONSIVE_MS || now - oldest.startedAt < RESPONSIVE_MS;
  }

  onExit(listener: () => void): void {
    if (this.exited) listener();
    else this.exitListeners.push(listener);
  }

  private hostPid: number | undefined;
  private cpuGroup: { remove(): void } | undefined;
  /** Where messages from the child go: the load's handler, then onMessage. */
  private handleMessage: (message: FromChild) => void = () => {};
  /** Set when the child broke the channel's protocol (then it is stopped). */
  private violation: string | undefined;

  private async spawn(): Promise<void> {
    const { spec } = this;
    if (!spec.isolation.host && spec.isolation.refusal) throw sandboxRefused(spec.isolation.refusal);
    // In namespaces the scratch dir is a tmpfs of its own (a bounded size, gone with the process).
    if (!spec.isolation.host) {
      fs.mkdirSync(spec.scratchDir, { recursive: true, mode: 0o700 });
      if (spec.user) fs.chownSync(spec.scratchDir, spec.user.uid, spec.user.gid);
    }
    this.child = spec.isolation.host ? this.spawnInNamespaces(spec.isolation.host) : this.spawnPlain();
    // What bypasses the child's own capture (V8's fatal errors, Node's warnings) arrives here.
    this.child.stdout?.on("data", (chunk: Buffer) => this.captureRaw(chunk));
    this.child.stderr?.on("data", (chunk: Buffer) => this.captureRaw(chunk));
    // Messages, one JSON line each on its descriptor 3; anything else stops the process.
    const decoder = new LineDecoder<FromChild>(
      LIMITS.resultBytes + 64 * 1024,
      (message) => this.handleMessage(message),
      (reason) => {
        this.violation = `The worker process wrote ${reason} on Workyard's channel and was stopped.`;
        this.kill();
      },
    );
    const channel = this.child.stdio[3] as NodeJS.ReadableStream | null;
    channel?.on("data", (chunk: Buffer) => decoder.push(chunk));
    channel?.on("error", () => {});
    this.child.stdin?.on("error", () => {});
    // The worker's variables, before its code loads.
    this.send({ type: "start", env: this.workerVariables() });
    this.watchMemory();

    this.child.on("exit", (code, signal) => {
      this.exited = true;
      this.cpuGroup?.remove();
      this.exitInfo = { code, signal };
      this.finishOnExit();
      fs.rm(spec.scratchDir, { recursive: true, force: true }, () => {});
      for (const listener of this.exitListeners.splice(0)) listener();
    });

    const loadLogs: string[] = [];
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.kill();
        reject(new LoadError({ name: "LoadTimeout", message: `The worker did not load within ${LIMITS.loadTimeoutMs / 1000}s.` }, loadLogs.join("")));
      }, LIMITS.loadTimeoutMs);
      let loadLogBytes = 0;
      this.handleMessage = (message: FromChild) => {
        if (message.type === "log") {
          if (typeof message.data === "string" && loadLogBytes < LIMITS.logBytes) {
            loadLogs.push(message.data.slice(0, LIMITS.logBytes - loadLogBytes));
            loadLogBytes += message.data.length;
          }
        } else if (message.type === "ready") {
          clearTimeout(timer);
          this.manifest = message.manifest;
          this.loadMs = Number(message.loadMs) || 0;
          this.confineCpu();
          this.handleMessage = (m) => this.onMessage(m);
          resolve();
        } else if (message.type === "load_failed" || message.type === "crash") {
          clearTimeout(timer);
          reject(new LoadError(asSerializedError(message.error), loadLogs.join("")));
        }
      };
      this.child.once("exit", (code, signal) => {
        clearTimeout(timer);
        if (this.violation) {
          reject(new LoadError({ name: "ProtocolViolation", message: this.violation }, loadLogs.join("")));
          return;
        }
        const detail = this.rawStderr.trim() ? `: ${this.rawStderr.trim().split("\n").slice(-5).join("\n")}` : "";
        reject(new LoadError({ name: "ProcessExited", message: `The worker process exited while loading (${signal ?? `code ${code}`})${detail}` }, loadLogs.join("")));
      });
      this.child.once("error", (error) => {
        clearTimeout(timer);
        reject(new LoadError({ name: "SpawnFailed", message: `Could not start the worker process: ${error.message}` }, ""));
      });
    }).catch((error: unknown) => {
      this.kill();
      throw error;
    });
  }

  /** The process's environment: fixed by the runtime, nothing of the worker's (see "start"). */
  private environment(paths: { scratch: string }): Record<string, string> {
    return {
      HOME: paths.scratch,
      TMPDIR: paths.scratch,
      // Empty: flags here would switch the permission model off.
      NODE_OPTIONS: "",
    };
  }

  /** The worker's variables, for the first message: its secrets, NODE_ENV production unless set. */
  private workerVariables(): Record<string, string> {
    return { NODE_ENV: "production", ...this.spec.env };
  }

  private nodeFlags(paths: { entry: string; undici: string; worker: string; scratch: string }): string[] {
    return [
      "--experimental-permission",
      "--disable-warning=ExperimentalWarning",
      `--allow-fs-read=${paths.entry}`,
      `--allow-fs-read=${paths.undici}`,
      `--allow-fs-read=${paths.worker}`,
      `--allow-fs-read=${paths.scratch}`,
      `--allow-fs-write=${paths.scratch}`,
      `--max-old-space-size=${this.spec.memoryMb}`,
    ];
  }

  /** bubblewrap: own namespaces, only its own files mounted, the workspace's uid as root. */
  private spawnInNamespaces(host: SandboxHost): ChildProcess {
    const { spec } = this;
    const mounts: Mount[] = [
      { source: spec.entry, target: INSIDE.entry },
      { source: UNDICI_DIR, target: INSIDE.undici },
      { source: path.join(spec.bundleDir, "index.mjs"), target: INSIDE.bundle },
      { source: spec.nodeModules, target: INSIDE.nodeModules },
    ];
    const map = path.join(spec.bundleDir, "index.mjs.map");
    if (fs.existsSync(map)) mounts.push({ source: map, target: INSIDE.map });
    if (spec.egressSocket) mounts.push({ source: spec.egressSocket, target: INSIDE.egressSocket, writable: true });
    const flags = this.nodeFlags({ entry: INSIDE.entry, undici: INSIDE.undici, worker: "/worker", scratch: INSIDE.scratch });
    const args = sandboxArgs(host, {
      mounts,
      user: spec.user,
      infoFd: 4,
      tmpfs: [{ path: INSIDE.scratch, bytes: LIMITS.scratchBytes }],
      cwd: INSIDE.scratch,
      command: [
        host.node,
        ...flags,
        INSIDE.entry,
        INSIDE.bundle,
        String(LIMITS.logBytes),
        String(LIMITS.resultBytes),
        spec.egressSocket ? INSIDE.egressSocket : "",
        INSIDE.undici,
      ],
    });
    const child = spawn(host.bwrap, args, {
      // A fixed environment: the worker's variables arrive in the first message, so none of them
      // reaches bubblewrap or setpriv (which run as root) or the dynamic linker.
      env: this.environment({ scratch: INSIDE.scratch }),
      cwd: "/",
      stdio: ["pipe", "pipe", "pipe", "pipe", "pipe"],
    });
    // bubblewrap names the process it started, as the host sees it: for memory and CPU accounting.
    let info = "";
    const infoStream = child.stdio[4] as NodeJS.ReadableStream | null;
    infoStream?.on("data", (chunk: Buffer) => {
      info += chunk.toString("utf8");
      const match = /"child-pid":\s*(\d+)/.exec(info);
      if (match && this.hostPid === undefined) {
        this.hostPid = Number(match[1]);
        this.admitCpu();
      }
    });
    infoStream?.on("error", () => {});
    return child;
  }

  /** Without namespaces: Node's permission model, and the workspace's uid as root. */
  private spawnPlain(): ChildProcess {
    const { spec } = this;
    const flags = this.nodeFlags({ entry: spec.entry, undici: UNDICI_DIR, worker: spec.bundleDir, scratch: spec.scratchDir });
    flags.push(`--allow-fs-read=${spec.nodeModules}`);
    const child = spawn(
      process.execPath,
      [...flags, spec.entry, path.join(spec.bundleDir, "index.mjs"), String(LIMITS.logBytes), String(LIMITS.resultBytes), spec.egressSocket ?? "", UNDICI_DIR],
      {
        env: this.environment({ scratch: spec.scratchDir }),
        cwd: spec.scratchDir,
        stdio: ["pipe", "pipe", "pipe", "pipe"],
        ...(spec.user ? { uid: spec.user.uid, gid: spec.user.gid } : {}),
      },
    );
    if (child.pid) {
      this.hostPid = child.pid;
      this.admitCpu();
    }
    return child;
  }

  /** While it loads: the group all sandboxed processes share where the server can make them, else a lower priority. */
  private admitCpu(): void {
    const pid = this.hostPid;
    if (!pid) return;
    const { cpu } = this.spec.isolation;
    if (cpu) {
      cpu.admit(pid);
      return;
    }
    try {
      os.setPriority(pid, 10);
    } catch {
      // gone already, or not ours to renice
    }
  }

  /** Once loaded: a CPU quota of its own (cgroup.ts says why not before). */
  private confineCpu(): void {
    const pid = this.hostPid;
    const { cpu } = this.spec.isolation;
    if (pid && cpu && !this.cpuGroup) this.cpuGroup = cpu.confine(`p${process.pid}-${this.id}`, pid, this.spec.cpuCores);
  }

  private captureRaw(chunk: Buffer): void {
    this.rawStderr = (this.rawStderr + chunk.toString("utf8")).slice(-16 * 1024);
  }

  /**
   * A message of a loaded process. The child is the worker's code too: what it sends is checked
   * here (its output capped per run by the server, whatever the child says; errors made of strings).
   */
  private onMessage(message: FromChild): void {
    if (message.type === "alive" || message.type === "result" || message.type === "error") {
      this.lastTurnAt = performance.now();
      if (message.type === "alive" && typeof message.seq === "number") this.onPong?.(message.seq);
    }
    const runId = "runId" in message && typeof message.runId === "string" ? message.runId : null;
    const run = runId === null ? undefined : this.running.get(runId);
    if (message.type === "log") {
      if (!run || typeof message.data !== "string") return;
      const stream = message.stream === "stderr" ? "stderr" : "stdout";
      if (run.logBytes < LIMITS.logBytes) {
        const piece = message.data.slice(0, LIMITS.logBytes - run.logBytes);
        run.logBytes += piece.length;
        run.onLog(stream, piece);
      } else if (!run.logNoticeSent) {
        run.logNoticeSent = true;
        run.onLog("stderr", `[workyard] output beyond ${LIMITS.logBytes} bytes was dropped\n`);
      }
      return;
    }
    if (message.type === "crash") {
      this.stopping = true;
      // The process ends: the run that threw gets its error; with no run named, every run does.
      const error = asSerializedError(message.error);
      const lost = { exitCode: EXIT_CODES.error, reason: "crash", processLost: true } as const;
      if (run) run.finish({ ok: false, error, ...lost });
      else for (const each of [...this.running.values()]) each.finish({ ok: false, error, ...lost });
      return;
    }
    // A run past its own limit ends as such when the process stops, whatever it answers meanwhile.
    if (!run || run.timedOut) return;
    if (message.type === "result") run.finish({ ok: true, value: message.value, exitCode: 0 });
    else if (message.type === "error") run.finish({ ok: false, error: asSerializedError(message.error), exitCode: EXIT_CODES.error, reason: "error", processLost: false });
  }

  /**
   * Why the server stopped the process: a run's time limit (and whether its event loop still
   * turned then, see TURN_WAIT_MS), or the memory limit. Each run's own message is its own.
   */
  private killReason: { reason: "timeout"; loopFree: boolean } | { reason: "memory" } | undefined;

  /**
   * Runs one capability; resolves with its outcome (never rejects). Several may run at once in one
   * process: a run past its time limit stops the process, and the others in it end with it.
   */
  run(options: RunOptions): Promise<RunOutcome> {
    if (this.running.has(options.runId)) throw new Error(`The run ${options.runId} is under way in this process already.`);
    if (this.exited) {
      return Promise.resolve({
        ok: false,
        error: { name: "ProcessExited", message: "The worker process had exited." },
        exitCode: EXIT_CODES.error,
        reason: "crash",
        processLost: true,
      });
    }
    return new Promise<RunOutcome>((resolve) => {
      const timer = setTimeout(() => this.timeLimitPassed(options.runId, options.timeoutMs), options.timeoutMs);
      this.running.set(options.runId, {
        startedAt: performance.now(),
        timedOut: undefined,
        onLog: options.onLog,
        logBytes: 0,
        logNoticeSent: false,
        finish: (outcome) => {
          clearTimeout(timer);
          this.running.delete(options.runId);
          resolve(outcome);
        },
      });
      this.send({ type: "run", runId: options.runId, key: options.key, input: options.input, env: options.env });
    });
  }

  /**
   * A run's time limit passed: the process stops, after one more turn of its event loop or
   * TURN_WAIT_MS without one (which says whether the run is the one to blame). The turn is the
   * answer to a ping sent now: a sign of life already on its way may predate the limit. It takes
   * no run meanwhile; the runs that end meanwhile end as they would have.
   */
  private timeLimitPassed(runId: string, timeoutMs: number): void {
    const message = `The run exceeded its time limit of ${formatMs(timeoutMs)} and was stopped.`;
    const run = this.running.get(runId);
    if (run) run.timedOut = message;
    if (this.killReason || this.exited) return;
    this.stopping = true;
    const reason = { reason: "timeout" as const, loopFree: false };
    this.killReason = reason;
    const stop = (loopFree: boolean) => {
      clearTimeout(waiting);
      this.onPong = undefined;
      reason.loopFree = loopFree;
      this.kill();
    };
    const waiting = setTimeout(() => stop(false), TURN_WAIT_MS);
    const seq = ++this.pings;
    this.onPong = (answered) => {
      if (answered === seq) stop(true);
    };
    this.send({ type: "ping", seq });
  }

  /** Pushes changed variables (a refreshed token) into the process while it runs. */
  setEnv(env: EnvPatch): void {
    if (!this.exited) this.send({ type: "env", env });
  }

  private send(message: ToChild): void {
    const stdin = this.child.stdin;
    if (this.exited || !stdin?.writable) return;
    // The messages of one turn of the event loop (the runs of every request it read) go in one
    // write: runs that come together wake the process once.
    if (!stdin.writableCorked) {
      stdin.cork();
      setImmediate(() => stdin.uncork());
    }
    // Gone meanwhile: the exit handler reports the run.
    stdin.write(encodeMessage(message), () => {});
  }

  /**
   * Resident memory watched for the process's whole life, not only during runs: a worker that
   * allocates from a timer between runs is stopped too.
   */
  private watchMemory(): void {
    const rssLimitKb = (this.spec.memoryMb + LIMITS.rssHeadroomMb) * 1024;
    const poll = setInterval(() => {
      if (this.exited) return clearInterval(poll);
      const rss = readRssKb(this.hostPid);
      if (rss !== undefined && rss > rssLimitKb) {
        this.killReason = { reason: "memory" };
        this.kill();
      }
    }, LIMITS.memoryPollMs);
    poll.unref();
  }

  /** The process is gone: every run still under way in it ends, each told why. */
  private finishOnExit(): void {
    for (const run of [...this.running.values()]) run.finish(this.exitOutcome(run));
  }

  private exitOutcome(run: ActiveRun): RunOutcome {
    const { code, signal } = this.exitInfo ?? { code: null, signal: null };
    const lost = (name: string, message: string, exitCode: number = EXIT_CODES.error, reason: "crash" | "timeout" | "memory" = "crash"): Extract<RunOutcome, { ok: false }> => ({
      ok: false,
      error: { name, message },
      exitCode,
      reason,
      processLost: true,
    });
    if (this.violation) return lost("ProtocolViolation", this.violation);
    const killed = this.killReason;
    // V8 aborts on heap exhaustion (SIGABRT, "JavaScript heap out of memory"), perhaps while a time
    // limit waited for the loop: the memory is the cause, and the heap is every run's.
    if (killed?.reason === "memory" || signal === "SIGABRT" || /heap out of memory/i.test(this.rawStderr)) {
      return lost("LimitExceeded", `The run exceeded its memory limit of ${this.spec.memoryMb} MiB and was stopped.`, EXIT_CODES.memory, "memory");
    }
    if (killed?.reason === "timeout") {
      // Its own limit passed (the first to pass, or one passing while the process was stopping).
      if (run.timedOut !== undefined) return lost("LimitExceeded", run.timedOut, EXIT_CODES.timeout, "timeout");
      // Another run's limit: each run in it ends at a time limit.
      const outcome = lost(
        "LimitExceeded",
        "The worker process was stopped at another run's time limit (a run in it kept its event loop busy, or ran past its limit); this run ended with it.",
        EXIT_CODES.timeout,
        "timeout",
      );
      // Collateral only when the event loop still turned at that limit: the run whose limit passed
      // is the one that never ended. Held by a run that spins, it could be any of them.
      return killed.loopFree ? { ...outcome, collateral: true } : outcome;
    }
    const tail = this.rawStderr.trim().split("\n").slice(-5).join("\n");
    return lost("ProcessExited", `The worker process exited during the run (${signal ?? `code ${code}`})${tail ? `: ${tail}` : "."}`);
  }

  kill(): void {
    this.stopping = true;
    if (this.exited) return;
    // The sandboxed process itself (it may run as another uid than bubblewrap), then its parent.
    if (this.hostPid && this.hostPid !== this.child.pid) {
      try {
        process.kill(this.hostPid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    try {
      this.child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
}

function readRssKb(pid: number | undefined): number | undefined {
  if (!pid) return undefined;
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
    const match = /VmRSS:\s+(\d+)\s+kB/.exec(status);
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

export function formatMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

/** Runs and builds on a server that cannot keep them apart from itself. */
export function sandboxRefused(reason: string): AppError {
  return new AppError("sandbox_unavailable", reason, {
    hint: "The operator should install bubblewrap (apt-get install bubblewrap) and restart the server.",
  });
}

/** An error as the child reported it, made of strings whatever the child sent. */
function asSerializedError(value: unknown): SerializedError {
  const error = (value && typeof value === "object" ? value : {}) as Record<string, unknown>;
  const text = (field: unknown, max: number) => (typeof field === "string" ? field.slice(0, max) : undefined);
  return {
    name: text(error.name, 200) ?? "Error",
    message: text(error.message, 64 * 1024) ?? "The worker reported an error without a message.",
    stack: text(error.stack, 64 * 1024),
    code: text(error.code, 200),
    permission: text(error.permission, 200),
    resource: text(error.resource, 4096),
  };
}
