import fs from "node:fs";
import path from "node:path";
import type { Kysely } from "kysely";
import { layout } from "./builder/materialise.js";
import type { Logger } from "./log.js";
import * as deploymentsStore from "./store/deployments.js";
import * as runsStore from "./store/runs.js";
import type { Database } from "./store/schema.js";
import * as uploadsStore from "./store/uploads.js";

/** No build lasts longer (an npm install is stopped after 10 minutes). */
const BUILD_DEADLINE_MS = 20 * 60 * 1000;
const SWEEP_EVERY_MS = 60 * 1000;

/**
 * What crashes and time leave behind, cleared at start and then every minute, from any process:
 * runs still "running" past their time limit (no run outlives it, in any process), builds past
 * their deadline, expired unused uploads, and on disk the work folders and half-written temporary
 * folders of builds and installs that a killed process never finished.
 */
export class Maintenance {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly options: {
      db: Kysely<Database>;
      dataDir: string;
      runTimeoutMs: number;
      /** SQLite: this process is the only server, so whatever it finds running at start is dead. */
      soleServer: boolean;
      log: Logger;
    },
  ) {}

  async start(): Promise<void> {
    await this.sweep(true);
    this.timer = setInterval(() => void this.sweep(false), SWEEP_EVERY_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  async sweep(atStart: boolean): Promise<void> {
    const { db, log } = this.options;
    const now = Date.now();
    const everything = atStart && this.options.soleServer;
    try {
      const runs = await runsStore.failInterruptedRuns(db, everything ? now : now - this.options.runTimeoutMs - 60_000, now);
      const builds = await deploymentsStore.failStaleBuilds(db, everything ? now : now - BUILD_DEADLINE_MS, now);
      await uploadsStore.deleteExpiredUploads(db, now);
      if (runs + builds > 0) log.info({ runs, builds }, "recorded interrupted runs and builds as failed");
    } catch (error) {
      log.warn({ err: error }, "maintenance sweep failed");
    }
    this.cleanDisk(now);
  }

  private cleanDisk(now: number): void {
    const dirs = layout(this.options.dataDir);
    const removeOld = (dir: string, olderThanMs: number, match: (name: string) => boolean) => {
      let names: string[];
      try {
        names = fs.readdirSync(dir);
      } catch {
        return;
      }
      for (const name of names) {
        if (!match(name)) continue;
        const full = path.join(dir, name);
        try {
          if (now - fs.statSync(full).mtimeMs > olderThanMs) fs.rmSync(full, { recursive: true, force: true });
        } catch {
          // gone meanwhile
        }
      }
    };
    removeOld(dirs.builds, BUILD_DEADLINE_MS, () => true);
    removeOld(dirs.deps, 60 * 60 * 1000, (name) => name.includes(".tmp-"));
    removeOld(dirs.deployments, 60 * 60 * 1000, (name) => name.includes(".tmp-"));
    // Scratch folders of worker processes that a previous server process started.
    removeOld(dirs.scratch, 0, (name) => !name.startsWith(`${process.pid}-`));
  }
}
