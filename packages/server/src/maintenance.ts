import fs from "node:fs";
import path from "node:path";
import type { Kysely } from "kysely";
import { layout } from "./data-dir.js";
import type { Logger } from "./log.js";
import * as deploymentsStore from "./store/deployments.js";
import * as runsStore from "./store/runs.js";
import type { Database } from "./store/schema.js";
import * as uploadsStore from "./store/uploads.js";
import * as webhooksStore from "./store/webhooks.js";
import * as workersStore from "./store/workers.js";

/** No build lasts longer (an npm install is stopped after 10 minutes). */
const BUILD_DEADLINE_MS = 20 * 60 * 1000;
const SWEEP_EVERY_MS = 60 * 1000;
/**
 * What is on disk stays this long after its last change, in use or not: a build may have just
 * installed a tree and not yet recorded its deployment; a streamed upload may still be arriving.
 */
export const DISK_GRACE_MS = 60 * 60 * 1000;
/** Deployments deleted per sweep at most (the rest go in the next sweeps). */
const DEPLOYMENTS_PER_SWEEP = 500;
/** An installed tree's folder under `<dataDir>/deps`: the lockfile hash (builder/install.ts). */
const TREE_NAME = /^[0-9a-f]{32}$/;

export interface MaintenanceOptions {
  db: Kysely<Database>;
  dataDir: string;
  runTimeoutMs: number;
  /** SQLite: this process is the only server, so whatever it finds running at start is dead. */
  soleServer: boolean;
  /** Runs (and their logs) that ended longer ago than this are deleted (config.runRetentionMs). */
  runRetentionMs: number;
  /** Deployments kept per worker besides the live one (and any still building) (config.deploymentsKept). */
  deploymentsKept: number;
  /** Finished webhook deliveries (their sealed requests) received longer ago than this are deleted (config.webhookRetentionMs). */
  webhookRetentionMs: number;
  /** The workers with processes on this machine, and how to stop those of a worker deleted elsewhere. */
  workerProcesses: { workerIds(): string[]; retireWorker(workerId: string): void };
  log: Logger;
}

/** What one sweep deleted, by kind. */
export interface SweepReport {
  runs: number;
  deliveries: number;
  deployments: number;
  uploads: number;
  trees: number;
}

/**
 * What crashes and time leave behind, cleared at start and then every minute, from any process:
 * runs still "running" past their time limit (no run outlives it, in any process), builds past
 * their deadline, expired unused uploads, and on disk the work folders and half-written temporary
 * folders of builds and installs that a killed process never finished.
 *
 * And retention: runs that ended longer ago than `runRetentionMs`; finished webhook deliveries
 * received longer ago than `webhookRetentionMs`; per worker the deployments
 * beyond the newest `deploymentsKept` (never the live one, never one building) with their folders
 * on this machine; uploads no remaining deployment needs; installed dependency trees
 * (`deps/<hash>`) that no deployment uses, once untouched for an hour.
 */
export class Maintenance {
  private timer: NodeJS.Timeout | undefined;
  /** The sweep under way: sweeps never overlap, a sweep asked for meanwhile runs after it. */
  private current: Promise<SweepReport> | undefined;

  constructor(private readonly options: MaintenanceOptions) {}

  async start(): Promise<void> {
    await this.sweep(true);
    this.timer = setInterval(() => {
      if (!this.current) void this.sweep(false);
    }, SWEEP_EVERY_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** One sweep; never throws (what fails is logged and tried again at the next one). */
  sweep(atStart: boolean): Promise<SweepReport> {
    const previous = this.current ?? Promise.resolve();
    const next = previous.then(() => this.sweepOnce(atStart));
    this.current = next;
    void next.finally(() => {
      if (this.current === next) this.current = undefined;
    });
    return next;
  }

  private async sweepOnce(atStart: boolean): Promise<SweepReport> {
    const { db, log } = this.options;
    const now = Date.now();
    const everything = atStart && this.options.soleServer;
    const report: SweepReport = { runs: 0, deliveries: 0, deployments: 0, uploads: 0, trees: 0 };
    // Each step on its own: one that fails (a busy store) does not keep the others from running.
    const step = async (what: string, work: () => Promise<void>) => {
      try {
        await work();
      } catch (error) {
        log.warn({ err: error, step: what }, "maintenance sweep step failed");
      }
    };
    await step("interrupted", async () => {
      const runs = await runsStore.failInterruptedRuns(db, everything ? now : now - this.options.runTimeoutMs - 60_000, now);
      const builds = await deploymentsStore.failStaleBuilds(db, everything ? now : now - BUILD_DEADLINE_MS, now);
      if (runs + builds > 0) log.info({ runs, builds }, "recorded interrupted runs and builds as failed");
    });
    await step("deleted workers", async () => {
      // Deleted through another server process: this one stops the processes it still has.
      const running = this.options.workerProcesses.workerIds();
      if (running.length === 0) return;
      const existing = await workersStore.existingWorkerIds(db, running);
      for (const id of running) if (!existing.has(id)) this.options.workerProcesses.retireWorker(id);
    });
    await step("runs", async () => {
      report.runs = await runsStore.deleteRunsEndedBefore(db, now - this.options.runRetentionMs);
    });
    await step("webhook deliveries", async () => {
      report.deliveries = await webhooksStore.deleteFinishedDeliveries(db, now - this.options.webhookRetentionMs);
    });
    await step("deployments", async () => {
      report.deployments = await this.pruneDeployments(now);
    });
    await step("uploads", async () => {
      report.uploads = (await uploadsStore.deleteExpiredUploads(db, now)) + (await uploadsStore.deleteSpentUploads(db, now - BUILD_DEADLINE_MS, now));
    });
    await step("deployment folders", () => this.removeOrphanFolders(now));
    await step("installed trees", async () => {
      report.trees = await this.collectTrees(now);
    });
    if (report.runs + report.deliveries + report.deployments + report.uploads + report.trees > 0) log.info({ ...report }, "retention: deleted what is no longer kept");
    this.cleanDisk(now);
    return report;
  }

  /** Deployments beyond the kept ones: rows first, then this machine's folders of them. */
  private async pruneDeployments(now: number): Promise<number> {
    const { db } = this.options;
    // Until the run time limit has passed since a worker's last deployment went live, a run on the
    // one before may still be going: that worker waits (one more minute covers clock skew).
    const settledBefore = now - this.options.runTimeoutMs - 60_000;
    const candidates = await deploymentsStore.deploymentsBeyondKept(db, this.options.deploymentsKept, settledBefore, DEPLOYMENTS_PER_SWEEP);
    const deleted = await deploymentsStore.deleteDeployments(
      db,
      candidates.map((c) => c.id),
    );
    const root = layout(this.options.dataDir).deployments;
    for (const id of deleted) removeTree(path.join(root, id));
    return deleted.length;
  }

  /**
   * Folders of deployments that no longer exist (deleted by another server process, or with their
   * worker): a materialised deployment is only ever written for a row that exists.
   */
  private async removeOrphanFolders(now: number): Promise<void> {
    const root = layout(this.options.dataDir).deployments;
    const names = listDir(root).filter((name) => !name.includes(".tmp-") && olderThan(path.join(root, name), now, DISK_GRACE_MS));
    if (names.length === 0) return;
    const existing = await deploymentsStore.existingDeploymentIds(this.options.db, names);
    for (const name of names) if (!existing.has(name)) removeTree(path.join(root, name));
  }

  /**
   * The installed-tree collector: a tree under `deps/` goes when no deployment records its hash, no
   * folder materialised on this machine links to it (a machine on another Node major installs the
   * same lockfile under another hash), it has not changed for an hour, and no build is under way
   * (a build reusing a tree records its hash only when it finishes). A tree is renamed out of the
   * way first, so no install ever finds half of it; a crash mid-removal leaves a `.tmp-` folder
   * that the next sweeps clear.
   */
  private async collectTrees(now: number): Promise<number> {
    const dirs = layout(this.options.dataDir);
    const candidates = listDir(dirs.deps).filter((name) => TREE_NAME.test(name) && olderThan(path.join(dirs.deps, name), now, DISK_GRACE_MS));
    if (candidates.length === 0) return 0;
    const linked = linkedTrees(dirs.deployments, dirs.deps);
    const inUse = await deploymentsStore.installedTreesInUse(this.options.db);
    if (inUse.building) return 0;
    let removed = 0;
    for (const name of candidates) {
      if (inUse.hashes.has(name) || linked.has(name)) continue;
      const from = path.join(dirs.deps, name);
      const doomed = `${from}.tmp-gc-${process.pid}`;
      try {
        fs.renameSync(from, doomed);
      } catch {
        continue; // gone meanwhile
      }
      removeTree(doomed);
      removed += 1;
    }
    return removed;
  }

  private cleanDisk(now: number): void {
    const dirs = layout(this.options.dataDir);
    const removeOld = (dir: string, olderThanMs: number, match: (name: string) => boolean) => {
      for (const name of listDir(dir)) {
        if (!match(name)) continue;
        const full = path.join(dir, name);
        if (olderThan(full, now, olderThanMs)) removeTree(full);
      }
    };
    removeOld(dirs.builds, BUILD_DEADLINE_MS, () => true);
    removeOld(dirs.deps, DISK_GRACE_MS, (name) => name.includes(".tmp-"));
    removeOld(dirs.deployments, DISK_GRACE_MS, (name) => name.includes(".tmp-"));
    // Streamed uploads that a killed process never finished receiving.
    removeOld(dirs.uploadsIncoming, DISK_GRACE_MS, () => true);
    // Scratch folders of worker processes that a previous server process started.
    removeOld(dirs.scratch, 0, (name) => !name.startsWith(`${process.pid}-`));
  }
}

function listDir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

/** Whether a path was last changed more than `ms` ago (false when it is gone). */
function olderThan(file: string, now: number, ms: number): boolean {
  try {
    return now - fs.lstatSync(file).mtimeMs > ms;
  } catch {
    return false;
  }
}

function removeTree(file: string): void {
  try {
    fs.rmSync(file, { recursive: true, force: true });
  } catch {
    // gone meanwhile, or not ours to remove: the next sweep tries again
  }
}

/** Names of the trees under `depsRoot` that materialised deployments on this machine link to. */
function linkedTrees(deploymentsRoot: string, depsRoot: string): Set<string> {
  const linked = new Set<string>();
  const root = realpathOr(depsRoot);
  for (const name of listDir(deploymentsRoot)) {
    let target: string;
    try {
      target = fs.readlinkSync(path.join(deploymentsRoot, name, "node_modules"));
    } catch {
      continue;
    }
    // `<deps>/<hash>/node_modules`: the link is absolute (materialise.ts links the real path).
    const tree = path.dirname(path.resolve(deploymentsRoot, name, target));
    if (path.dirname(tree) === root || path.dirname(tree) === depsRoot) linked.add(path.basename(tree));
  }
  return linked;
}

function realpathOr(file: string): string {
  try {
    return fs.realpathSync(file);
  } catch {
    return file;
  }
}
