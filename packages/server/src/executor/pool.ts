import path from "node:path";
import { AppError } from "../errors.js";
import type { Logger } from "../log.js";
import type { Isolation } from "./isolation.js";
import { LIMITS } from "./limits.js";
import type { EnvPatch } from "./protocol.js";
import { SandboxProcess, type RunOptions, type RunOutcome, type SandboxSpec } from "./sandbox.js";

/** Opens the egress gateway for one process: a Unix socket that only this process is given. */
export type EgressOpener = (
  socketPath: string,
  identity: { workspaceId: string; workerId: string },
) => Promise<{ close(): Promise<void> }>;

/** What a run or a manifest read needs: the deployment on disk and the worker's secrets of a version. */
export interface ExecTarget {
  workspaceId: string;
  /** The workspace's uid and gid when the server runs as root. */
  user: { uid: number; gid: number } | undefined;
  workerId: string;
  deploymentId: string;
  secretsVersion: number;
  /** The worker's secrets of that version, read only when a process must be started. */
  secrets(): Promise<Record<string, string>>;
  /** Makes the deployment's files and installed tree present on this machine. */
  materialise(): Promise<{ bundleDir: string; nodeModules: string }>;
}

/** What the pool uses of a worker process: SandboxProcess, or a double in the pool's unit tests. */
export type PooledProcess = Pick<SandboxProcess, "alive" | "accepting" | "responsive" | "manifest" | "loadMs" | "onExit" | "run" | "setEnv" | "kill">;

export interface Reservation {
  process: PooledProcess;
  run(options: RunOptions): Promise<RunOutcome>;
  /** Gives the process back without running (the run was abandoned before it started). */
  release(): void;
}

interface Pool {
  key: string;
  /** The latest request's target: what a replacement process is started from. */
  target: ExecTarget;
  workerId: string;
  deploymentId: string;
  secretsVersion: number;
  idle: { process: PooledProcess; since: number }[];
  /** Processes with runs under way, and how many each. */
  busy: Map<PooledProcess, number>;
  starting: number;
  waiters: ((process: PooledProcess | Error) => void)[];
  retired: boolean;
}

/**
 * Warm worker processes, a pool per (deployment, secrets version): a process is reused across
 * runs of its deployment, and never once the worker's secrets changed (module-level code read
 * process.env at load). Bounded per deployment and in all; idle processes stop after a while.
 * A run takes an idle process, else shares the least busy one that is responsive (up to
 * `runsPerProcess` runs at once), else a new one up to the deployment's bound, else waits.
 */
export class Executor {
  private readonly pools = new Map<string, Pool>();
  /** Processes alive or starting that count against the cap. */
  private total = 0;
  /** Runs waiting for room under the cap: woken one at a time as processes go. */
  private readonly roomWaiters: (() => void)[] = [];
  private readonly reaper: NodeJS.Timeout;
  private stopped = false;
  private readonly socketDir: string;

  constructor(
    private readonly options: {
      entry: string;
      scratchRoot: string;
      memoryMb: number;
      isolation: Isolation;
      /** Worker processes at once on this server; beyond, runs wait, then answer 503. */
      maxProcesses: number;
      /** Warm processes of one deployment, and runs waiting for one; beyond, 503 overloaded. */
      processesPerDeployment: number;
      /** Runs one process takes at once (1: one at a time). */
      runsPerProcess: number;
      queuedRunsPerDeployment: number;
      cpuCores: number;
      egress: EgressOpener | undefined;
      /** Where the egress sockets go (short: a socket path holds at most 107 bytes). */
      socketDir: string;
      log: Logger;
      /** Starts a process (SandboxProcess.start); the pool's unit tests give a double. */
      startProcess?: (spec: SandboxSpec) => Promise<PooledProcess>;
    },
  ) {
    this.reaper = setInterval(() => this.reapIdle(), Math.min(LIMITS.idleMs, 30_000));
    this.reaper.unref();
    this.socketDir = options.socketDir;
  }

  private poolFor(target: ExecTarget): Pool {
    const key = `${target.deploymentId}@${target.secretsVersion}`;
    let pool = this.pools.get(key);
    if (!pool) {
      // Older secrets versions of this worker are stale from now on.
      for (const other of this.pools.values()) {
        if (other.workerId === target.workerId && other.secretsVersion < target.secretsVersion) this.retire(other);
      }
      pool = {
        key,
        target,
        workerId: target.workerId,
        deploymentId: target.deploymentId,
        secretsVersion: target.secretsVersion,
        idle: [],
        busy: new Map(),
        starting: 0,
        waiters: [],
        retired: false,
      };
      this.pools.set(key, pool);
    }
    pool.target = target;
    return pool;
  }

  /** Starts a process for the target; the caller has counted it in `total`. */
  private async spawn(target: ExecTarget): Promise<PooledProcess> {
    let egress: { close(): Promise<void> } | undefined;
    try {
      const { bundleDir, nodeModules } = await target.materialise();
      const name = `${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
      let egressSocket: string | undefined;
      if (this.options.egress) {
        egressSocket = path.join(this.socketDir, `${name}.sock`);
        egress = await this.options.egress(egressSocket, { workspaceId: target.workspaceId, workerId: target.workerId });
      }
      const spec: SandboxSpec = {
        entry: this.options.entry,
        bundleDir,
        nodeModules,
        scratchDir: path.join(this.options.scratchRoot, name),
        env: await target.secrets(),
        memoryMb: this.options.memoryMb,
        isolation: this.options.isolation,
        user: target.user,
        egressSocket,
        cpuCores: this.options.cpuCores,
      };
      const started = await (this.options.startProcess ?? SandboxProcess.start)(spec);
      this.workspaceOf.set(started, target.workspaceId);
      started.onExit(() => {
        void egress?.close();
        this.uncount(started);
        this.forget(started);
      });
      return started;
    } catch (error) {
      void egress?.close();
      this.count(target.workspaceId, -1);
      this.wakeRoomWaiter();
      throw error;
    }
  }

  private readonly uncounted = new WeakSet<PooledProcess>();
  /** Processes counted per workspace: no workspace may hold more than its share of the cap. */
  private readonly perWorkspace = new Map<string, number>();
  private readonly workspaceOf = new WeakMap<PooledProcess, string>();

  /** A workspace's share: half the cap (at least one), so one workspace never holds them all. */
  private get workspaceShare(): number {
    return Math.max(1, Math.ceil(this.options.maxProcesses / 2));
  }

  private count(workspaceId: string, delta: 1 | -1): void {
    this.total += delta;
    const next = (this.perWorkspace.get(workspaceId) ?? 0) + delta;
    if (next <= 0) this.perWorkspace.delete(workspaceId);
    else this.perWorkspace.set(workspaceId, next);
  }

  /** Takes a process out of the count (once), and lets a waiting run use the room. */
  private uncount(process: PooledProcess): void {
    if (this.uncounted.has(process)) return;
    this.uncounted.add(process);
    this.count(this.workspaceOf.get(process) ?? "", -1);
    this.wakeRoomWaiter();
  }

  private wakeRoomWaiter(): void {
    this.roomWaiters.shift()?.();
  }

  /**
   * Room for one more process of a workspace, under the cap and under the workspace's share: at
   * once, by stopping the longest idle process (of any worker, or of the workspace when it is at its
   * share), or by waiting (bounded) for one to go. Counts the new process.
   */
  private async makeRoom(workspaceId: string): Promise<void> {
    const deadline = Date.now() + LIMITS.roomWaitMs;
    for (;;) {
      const full = this.total >= this.options.maxProcesses;
      const atShare = (this.perWorkspace.get(workspaceId) ?? 0) >= this.workspaceShare;
      if (!full && !atShare) break;
      if (this.evictOneIdle(atShare ? workspaceId : undefined)) continue;
      if (this.roomWaiters.length >= LIMITS.queuedRunsTotal || Date.now() >= deadline) {
        const what = atShare
          ? `This workspace runs its share of ${this.workspaceShare} of the server's ${this.options.maxProcesses} worker processes`
          : `This server runs its maximum of ${this.options.maxProcesses} worker processes`;
        throw new AppError("overloaded", `${what}; try again shortly.`, {
          hint: "Retry after the time in the Retry-After header (the operator can raise --max-processes).",
        });
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          const index = this.roomWaiters.indexOf(wake);
          if (index >= 0) this.roomWaiters.splice(index, 1);
          resolve();
        }, Math.max(0, deadline - Date.now()));
        const wake = () => {
          clearTimeout(timer);
          resolve();
        };
        this.roomWaiters.push(wake);
      });
      if (this.stopped) throw new AppError("overloaded", "The server is stopping.");
    }
    this.count(workspaceId, 1);
  }

  /** Loads the deployment in a fresh process with these secrets; the process then joins the pool. */
  async loadManifest(target: ExecTarget): Promise<{ manifest: unknown; loadMs: number }> {
    await this.makeRoom(target.workspaceId);
    const process = await this.spawn(target);
    const pool = this.poolFor(target);
    this.release(pool, process);
    return { manifest: process.manifest, loadMs: process.loadMs };
  }

  /** Loads the deployment once with the target's (possibly altered) environment, reports its manifest, and stops. */
  async probe(target: ExecTarget): Promise<unknown> {
    await this.makeRoom(target.workspaceId);
    const process = await this.spawn(target);
    process.kill();
    return process.manifest;
  }

  /** A warm process of the target's pool, a new one, or the next one freed. */
  private async acquire(target: ExecTarget): Promise<{ pool: Pool; process: PooledProcess }> {
    const pool = this.poolFor(target);
    while (pool.idle.length > 0) {
      const { process } = pool.idle.pop()!;
      if (process.accepting) {
        pool.busy.set(process, 1);
        return { pool, process };
      }
    }
    // A busy process with room takes this run beside its others: a warm process that is awake
    // anyway answers sooner than a new one, and runs that come together wake it once.
    const shared = this.leastBusy(pool);
    if (shared) {
      pool.busy.set(shared, pool.busy.get(shared)! + 1);
      return { pool, process: shared };
    }
    const size = pool.busy.size + pool.starting;
    if (size < this.options.processesPerDeployment) {
      pool.starting += 1;
      try {
        await this.makeRoom(target.workspaceId);
        const process = await this.spawn(target);
        pool.busy.set(process, 1);
        // Runs that queued while it started share it at once (a burst on a cold deployment).
        this.shareWithWaiters(pool, process);
        return { pool, process };
      } finally {
        pool.starting -= 1;
      }
    }
    if (pool.waiters.length >= this.options.queuedRunsPerDeployment) {
      throw new AppError("overloaded", "Too many runs of this worker are waiting for a process; try again shortly.", {
        hint: "Retry after the time in the Retry-After header.",
      });
    }
    const next = await new Promise<PooledProcess | Error>((resolve) => pool.waiters.push(resolve));
    if (next instanceof Error) throw next;
    return { pool, process: next };
  }

  /**
   * Gives waiting runs a process (idle, or busy with room and seemingly alive), each counted in
   * here: a waiter gets its process already counted.
   */
  private shareWithWaiters(pool: Pool, process: PooledProcess): void {
    while (pool.waiters.length > 0) {
      const runs = pool.busy.get(process) ?? 0;
      if (!this.hasRoom(process, runs)) return;
      pool.busy.set(process, runs + 1);
      pool.waiters.shift()!(process);
    }
  }

  /** The busy process of the pool with the fewest runs, among those with room for one more. */
  private leastBusy(pool: Pool): PooledProcess | undefined {
    let best: { process: PooledProcess; runs: number } | undefined;
    for (const [process, runs] of pool.busy) {
      if ((!best || runs < best.runs) && this.hasRoom(process, runs)) best = { process, runs };
    }
    return best?.process;
  }

  /**
   * Whether a process with `runs` under way may take one more: under runsPerProcess, and taking
   * runs (not on its way out; with runs under way, not silent as if stuck).
   */
  private hasRoom(process: PooledProcess, runs: number): boolean {
    return runs < this.options.runsPerProcess && process.responsive;
  }

  private release(pool: Pool, process: PooledProcess): void {
    const runs = (pool.busy.get(process) ?? 1) - 1;
    if (runs > 0) {
      // Busy with others still: its freed room goes to a waiting run, unless it is on its way out
      // (then the last of its runs releases it).
      pool.busy.set(process, runs);
      if (process.accepting && !pool.retired && !this.stopped) this.shareWithWaiters(pool, process);
      return;
    }
    pool.busy.delete(process);
    // Gone or going: the runs waiting for one get a new process (once, not once per run it held).
    if (!process.accepting) return this.wakeWaiter(pool);
    if (pool.retired || this.stopped) {
      process.kill();
      return;
    }
    if (pool.waiters.length > 0) {
      this.shareWithWaiters(pool, process);
      return;
    }
    pool.idle.push({ process, since: Date.now() });
    // A run of another worker waits for room under the cap: this idle process can make it.
    this.wakeRoomWaiter();
  }

  /**
   * A process died: a waiter starts a new one instead of waiting forever, and the others share it.
   * Not past the deployment's bound: a live process's next release serves them then.
   */
  private wakeWaiter(pool: Pool): void {
    if (pool.waiters.length === 0 || pool.busy.size + pool.starting >= this.options.processesPerDeployment) return;
    const waiter = pool.waiters.shift()!;
    pool.starting += 1;
    this.makeRoom(pool.target.workspaceId)
      .then(() => this.spawn(pool.target))
      .then(
      (process) => {
        pool.starting -= 1;
        pool.busy.set(process, 1);
        waiter(process);
        this.shareWithWaiters(pool, process);
      },
      (error: Error) => {
        pool.starting -= 1;
        waiter(error);
        // With no process left to free, the others would wait for ever: the same error for each.
        if (pool.busy.size === 0 && pool.starting === 0) for (const other of pool.waiters.splice(0)) other(error);
      },
    );
  }

  /**
   * A process of the target's pool, held for one run: taken (or queued for) before anything of the
   * run happens, so a full queue answers 503 before a run exists. `run` gives it back when done.
   */
  async reserve(target: ExecTarget): Promise<Reservation> {
    const { pool, process } = await this.acquire(target);
    let released = false;
    const release = () => {
      if (!released) this.release(pool, process);
      released = true;
    };
    return {
      process,
      release,
      run: async (options) => {
        try {
          const outcome = await process.run(options);
          // A process that hit a limit or crashed is not reused.
          if (!outcome.ok && outcome.processLost) process.kill();
          return outcome;
        } finally {
          release();
        }
      },
    };
  }

  /** Sends changed variables to every process of the worker that is running now. */
  pushEnv(workerId: string, env: EnvPatch): void {
    for (const pool of this.pools.values()) {
      if (pool.workerId !== workerId) continue;
      for (const process of pool.busy.keys()) process.setEnv(env);
    }
  }

  /** The workers this executor has processes (or pools) for. */
  workerIds(): string[] {
    return [...new Set([...this.pools.values()].map((pool) => pool.workerId))];
  }

  /** Stops every process of a worker (deleted, or its secrets changed). */
  retireWorker(workerId: string): void {
    for (const pool of this.pools.values()) if (pool.workerId === workerId) this.retire(pool);
  }

  private retire(pool: Pool): void {
    pool.retired = true;
    for (const { process } of pool.idle.splice(0)) process.kill();
    // Runs waiting for a process of what is now stale would wait for ever (its processes stop as
    // their runs end): they never started, so they can be sent again, to the new deployment.
    for (const waiter of pool.waiters.splice(0)) {
      waiter(
        new AppError("overloaded", "The worker changed (a new deployment, new secrets, or deleted) while this run waited for a process; it did not start.", {
          hint: "Run it again.",
        }),
      );
    }
    // Busy processes finish their run and are stopped on release.
    if (pool.busy.size === 0 && pool.starting === 0) {
      this.pools.delete(pool.key);
    }
  }

  private forget(process: PooledProcess): void {
    for (const pool of this.pools.values()) {
      pool.idle = pool.idle.filter((entry) => entry.process !== process);
      if (pool.retired && pool.busy.size === 0 && pool.idle.length === 0 && pool.starting === 0) {
        this.pools.delete(pool.key);
      }
    }
  }

  /** Stops the longest idle process (of one workspace, if named); false when none is idle. */
  private evictOneIdle(workspaceId?: string): boolean {
    let oldest: { pool: Pool; index: number; since: number } | undefined;
    for (const pool of this.pools.values()) {
      if (workspaceId !== undefined && pool.target.workspaceId !== workspaceId) continue;
      pool.idle.forEach((entry, index) => {
        if (!oldest || entry.since < oldest.since) oldest = { pool, index, since: entry.since };
      });
    }
    if (!oldest) return false;
    const [entry] = oldest.pool.idle.splice(oldest.index, 1);
    if (!entry) return false;
    entry.process.kill();
    // Its room is free now, not when the kernel reports the exit.
    this.uncount(entry.process);
    return true;
  }

  private reapIdle(): void {
    const cutoff = Date.now() - LIMITS.idleMs;
    for (const pool of this.pools.values()) {
      const keep = [];
      for (const entry of pool.idle) {
        if (entry.since < cutoff) entry.process.kill();
        else keep.push(entry);
      }
      pool.idle = keep;
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.reaper);
    const exits: Promise<void>[] = [];
    for (const pool of this.pools.values()) {
      for (const process of [...pool.idle.map((e) => e.process), ...pool.busy.keys()]) {
        exits.push(new Promise((resolve) => process.onExit(resolve)));
        process.kill();
      }
      for (const waiter of pool.waiters.splice(0)) waiter(new Error("The server is stopping."));
    }
    this.pools.clear();
    for (const wake of this.roomWaiters.splice(0)) wake();
    await Promise.all(exits);
  }
}
