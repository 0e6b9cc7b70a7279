import { Writable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AppError } from "../errors.js";
import { createLogger } from "../log.js";
import type { Isolation } from "./isolation.js";
import { Executor, type ExecTarget, type PooledProcess } from "./pool.js";
import type { RunOptions, RunOutcome, SandboxSpec } from "./sandbox.js";

/*
 * The pool's rules, with process doubles instead of sandboxes (the sandbox itself is tested end to
 * end in test/build-run): reuse a warm process of the same deployment and secrets version, never
 * one of an older version, share a busy one that seems alive up to runsPerProcess, replace a
 * process that was lost, queue past the per-deployment bound
 * and refuse past the queue's, and make room under the cap by stopping the longest idle process.
 */

/** A process that runs what it is given: each run waits until the test lets it end, or ends at once. */
class FakeProcess implements PooledProcess {
  alive = true;
  /** Killed (or crashed) and not gone yet. */
  stopping = false;
  /** Whether kill() ends the process at once; else the test ends it with exit(). */
  exitOnKill = true;
  /** Set false by a test: a process that seems stuck takes no more runs. */
  seemsAlive = true;
  get accepting(): boolean {
    return this.alive && !this.stopping;
  }
  get responsive(): boolean {
    return this.accepting && this.seemsAlive;
  }
  manifest: unknown = { capabilities: [] };
  loadMs = 1;
  runs = 0;
  private readonly exitListeners: (() => void)[] = [];
  /** The outcome of the next runs; by default a success. */
  nextOutcome: RunOutcome = { ok: true, value: "done", exitCode: 0 };
  /** Runs in progress, ended by the test. */
  readonly pending: (() => void)[] = [];
  hold = false;

  constructor(readonly spec: SandboxSpec) {}

  onExit(listener: () => void): void {
    if (!this.alive) listener();
    else this.exitListeners.push(listener);
  }

  kill(): void {
    this.stopping = true;
    if (this.exitOnKill) this.exit();
  }
  exit(): void {
    if (!this.alive) return;
    this.alive = false;
    for (const listener of this.exitListeners.splice(0)) listener();
  }

  async run(_options: RunOptions): Promise<RunOutcome> {
    this.runs += 1;
    if (this.hold) await new Promise<void>((resolve) => this.pending.push(resolve));
    return this.nextOutcome;
  }

  setEnv(): void {}
}

let started: FakeProcess[];
let executor: Executor;
/** Every process starts held when set: its runs wait for the test. */
let holdRuns: boolean;
/** Set: no process starts. */
let failStarts: boolean;

function makeExecutor(bounds: { maxProcesses?: number; processesPerDeployment?: number; queuedRunsPerDeployment?: number; runsPerProcess?: number } = {}): Executor {
  return new Executor({
    entry: "/nonexistent/child.mjs",
    scratchRoot: "/nonexistent/scratch",
    memoryMb: 64,
    isolation: {} as Isolation,
    maxProcesses: bounds.maxProcesses ?? 8,
    processesPerDeployment: bounds.processesPerDeployment ?? 2,
    queuedRunsPerDeployment: bounds.queuedRunsPerDeployment ?? 2,
    runsPerProcess: bounds.runsPerProcess ?? 1,
    cpuCores: 1,
    egress: undefined,
    socketDir: "/nonexistent/sockets",
    log: createLogger({ level: "silent", stream: new Writable({ write: (_c, _e, done) => done() }) }),
    startProcess: async (spec) => {
      if (failStarts) throw new Error("cannot start");
      const process = new FakeProcess(spec);
      process.hold = holdRuns;
      started.push(process);
      return process;
    },
  });
}

function target(fields: Partial<Pick<ExecTarget, "workspaceId" | "workerId" | "deploymentId" | "secretsVersion">> = {}): ExecTarget {
  const secretsVersion = fields.secretsVersion ?? 1;
  return {
    workspaceId: fields.workspaceId ?? "ws",
    user: undefined,
    workerId: fields.workerId ?? "w1",
    deploymentId: fields.deploymentId ?? "d1",
    secretsVersion,
    secrets: async () => ({ VERSION: String(secretsVersion) }),
    materialise: async () => ({ bundleDir: "/nonexistent/bundle", nodeModules: "/nonexistent/node_modules" }),
  };
}

const runOptions: RunOptions = { runId: "r", key: "tool", input: {}, env: {}, timeoutMs: 1000, onLog: () => {} };
const runOn = async (executor: Executor, t: ExecTarget) => (await executor.reserve(t)).run(runOptions);

beforeEach(() => {
  started = [];
  holdRuns = false;
  failStarts = false;
});

afterEach(async () => {
  await executor?.stop();
});

describe("the executor's pool", () => {
  it("reuses a warm process for the next run of the same deployment and secrets version", async () => {
    executor = makeExecutor();
    await runOn(executor, target());
    await runOn(executor, target());
    expect(started).toHaveLength(1);
    expect(started[0]!.runs).toBe(2);
  });

  it("starts a new process once the secrets changed, with the new secrets, and stops the old one", async () => {
    executor = makeExecutor();
    await runOn(executor, target({ secretsVersion: 1 }));
    await runOn(executor, target({ secretsVersion: 2 }));
    expect(started).toHaveLength(2);
    expect(started[1]!.spec.env).toEqual({ VERSION: "2" });
    expect(started[0]!.alive).toBe(false);
    // And the old version is never handed out again.
    await runOn(executor, target({ secretsVersion: 2 }));
    expect(started).toHaveLength(2);
  });

  it("a deployment of another worker has its own processes", async () => {
    executor = makeExecutor();
    await runOn(executor, target({ workerId: "w1", deploymentId: "d1" }));
    await runOn(executor, target({ workerId: "w2", deploymentId: "d2" }));
    expect(started).toHaveLength(2);
    expect(started.every((p) => p.alive)).toBe(true);
  });

  it("does not reuse a process a run lost (a limit hit, a crash): the next run gets a new one", async () => {
    executor = makeExecutor();
    const first = await executor.reserve(target());
    (first.process as FakeProcess).nextOutcome = { ok: false, error: { name: "Error", message: "out of memory" }, exitCode: 137, reason: "memory", processLost: true };
    await first.run(runOptions);
    expect(started[0]!.alive).toBe(false);
    await runOn(executor, target());
    expect(started).toHaveLength(2);
  });

  it("past the per-deployment bound, runs wait for a process and get the one released; past the queue, 503 overloaded", async () => {
    holdRuns = true;
    executor = makeExecutor({ processesPerDeployment: 2, queuedRunsPerDeployment: 1 });
    const a = runOn(executor, target());
    const b = runOn(executor, target());
    await until(() => started.length === 2 && started.every((p) => p.pending.length === 1));
    const queued = runOn(executor, target());
    await expect(runOn(executor, target())).rejects.toSatisfy((error) => error instanceof AppError && error.code === "overloaded");
    // The first run ends: its process goes to the queued run, no third process starts.
    started[0]!.pending.shift()!();
    await a;
    await until(() => started[0]!.pending.length === 1);
    expect(started).toHaveLength(2);
    started[0]!.pending.shift()!();
    started[1]!.pending.shift()!();
    await Promise.all([b, queued]);
    expect(started[0]!.runs).toBe(2);
  });

  it("a busy process takes runs beside its own up to runsPerProcess, then new processes start, then runs wait", async () => {
    holdRuns = true;
    executor = makeExecutor({ processesPerDeployment: 2, runsPerProcess: 3, queuedRunsPerDeployment: 8 });
    // A burst on a cold deployment: two processes start, and the runs that queued meanwhile share them.
    const runs = Array.from({ length: 6 }, () => runOn(executor, target()));
    await until(() => started.length === 2 && started[0]!.pending.length === 3 && started[1]!.pending.length === 3);
    const queued = runOn(executor, target());
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(started.map((p) => p.pending.length)).toEqual([3, 3]);
    // One run of the first process ends: its room goes to the queued run, beside its other two.
    started[0]!.pending.shift()!();
    await until(() => started[0]!.pending.length === 3);
    expect(started).toHaveLength(2);
    for (const process of started) while (process.pending.length > 0) process.pending.shift()!();
    await Promise.all([...runs, queued]);
    expect(started.map((p) => p.runs)).toEqual([4, 3]);
    // All released: the next run takes an idle process again.
    started.forEach((p) => (p.hold = false));
    await runOn(executor, target());
    expect(started).toHaveLength(2);
  });

  it("a busy process that seems stuck takes no more runs: the next one starts a process", async () => {
    holdRuns = true;
    executor = makeExecutor({ processesPerDeployment: 2, runsPerProcess: 4 });
    const first = runOn(executor, target());
    await until(() => started.length === 1 && started[0]!.pending.length === 1);
    started[0]!.seemsAlive = false;
    const second = runOn(executor, target());
    await until(() => started.length === 2 && started[1]!.pending.length === 1);
    expect(started[0]!.pending).toHaveLength(1);
    for (const process of started) process.pending.shift()!();
    await Promise.all([first, second]);
  });

  it("a process on its way out takes no waiting runs; they get one new process, within the deployment's bound", async () => {
    holdRuns = true;
    executor = makeExecutor({ processesPerDeployment: 1, runsPerProcess: 3, queuedRunsPerDeployment: 8 });
    const held = [runOn(executor, target()), runOn(executor, target()), runOn(executor, target())];
    await until(() => started.length === 1 && started[0]!.pending.length === 3);
    const queued = [runOn(executor, target()), runOn(executor, target())];
    const dying = started[0]!;
    dying.exitOnKill = false;
    dying.nextOutcome = { ok: false, error: { name: "Error", message: "crashed" }, exitCode: 1, reason: "crash", processLost: true };
    // One run ends with the process lost: the pool stops it, which takes a moment to be gone.
    dying.pending.shift()!();
    await held[0];
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(dying.pending).toHaveLength(2);
    expect(started).toHaveLength(1);
    // Gone, with two runs ended at its exit: the two waiting runs share one new process.
    dying.exit();
    for (const resolve of dying.pending.splice(0)) resolve();
    await Promise.all(held);
    await until(() => started.length === 2 && started[1]!.pending.length === 2);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(started).toHaveLength(2);
    for (const resolve of started[1]!.pending.splice(0)) resolve();
    await Promise.all(queued);
  });

  it("runs waiting for a process of a worker that changed are answered, not left waiting", async () => {
    holdRuns = true;
    executor = makeExecutor({ processesPerDeployment: 1, queuedRunsPerDeployment: 4 });
    const running = runOn(executor, target());
    await until(() => started[0]?.pending.length === 1);
    const waiting = runOn(executor, target());
    executor.retireWorker("w1");
    await expect(waiting).rejects.toSatisfy((error) => error instanceof AppError && error.code === "overloaded" && /did not start/.test(error.message));
    started[0]!.pending.shift()!();
    expect(await running).toMatchObject({ ok: true });
  });

  it("when no process can be started for them, every waiting run gets the error", async () => {
    holdRuns = true;
    executor = makeExecutor({ processesPerDeployment: 1, queuedRunsPerDeployment: 4 });
    const running = runOn(executor, target());
    await until(() => started[0]?.pending.length === 1);
    const waiting = [runOn(executor, target()), runOn(executor, target())];
    failStarts = true;
    started[0]!.kill();
    started[0]!.pending.shift()!();
    await running;
    for (const run of waiting) await expect(run).rejects.toThrow("cannot start");
  });

  it("a process that dies while a run waits for it is replaced for that run", async () => {
    holdRuns = true;
    executor = makeExecutor({ processesPerDeployment: 1, queuedRunsPerDeployment: 1 });
    const first = await executor.reserve(target());
    const firstRun = first.run(runOptions);
    const waiting = runOn(executor, target());
    await until(() => started[0]!.pending.length === 1);
    started[0]!.kill();
    started[0]!.pending.shift()!();
    await firstRun;
    await until(() => started.length === 2 && started[1]!.pending.length === 1);
    started[1]!.pending.shift()!();
    expect(await waiting).toMatchObject({ ok: true });
  });

  it("retireWorker stops idle processes at once and busy ones when their run ends", async () => {
    holdRuns = true;
    executor = makeExecutor();
    const idle = await executor.reserve(target());
    const busy = await executor.reserve(target());
    idle.release();
    const busyRun = busy.run(runOptions);
    await until(() => started[1]!.pending.length === 1);
    executor.retireWorker("w1");
    expect(started[0]!.alive).toBe(false);
    expect(started[1]!.alive).toBe(true);
    started[1]!.pending.shift()!();
    await busyRun;
    expect(started[1]!.alive).toBe(false);
    expect(executor.workerIds()).toEqual([]);
  });

  it("at the server's cap, makes room by stopping the longest idle process, of any worker", async () => {
    executor = makeExecutor({ maxProcesses: 3 });
    await runOn(executor, target({ workspaceId: "a", workerId: "w1", deploymentId: "d1" }));
    await runOn(executor, target({ workspaceId: "b", workerId: "w2", deploymentId: "d2" }));
    await runOn(executor, target({ workspaceId: "b", workerId: "w3", deploymentId: "d3" }));
    await runOn(executor, target({ workspaceId: "a", workerId: "w4", deploymentId: "d4" }));
    // w1's process was idle longest.
    expect(started.map((p) => p.alive)).toEqual([false, true, true, true]);
  });

  it("a workspace at its share (half the cap) makes room among its own processes, never another's", async () => {
    executor = makeExecutor({ maxProcesses: 2 });
    await runOn(executor, target({ workspaceId: "a", workerId: "w1", deploymentId: "d1" }));
    await runOn(executor, target({ workspaceId: "b", workerId: "w2", deploymentId: "d2" }));
    await runOn(executor, target({ workspaceId: "b", workerId: "w3", deploymentId: "d3" }));
    expect(started.map((p) => p.alive)).toEqual([true, false, true]);
  });
});

async function until(condition: () => boolean, limitMs = 5000): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
