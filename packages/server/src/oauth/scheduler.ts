import type { Kysely } from "kysely";
import type { Logger } from "../log.js";
import * as oauthStore from "../store/oauth.js";
import type { Database, OauthConnectionRow, WorkerRow } from "../store/schema.js";
import * as workersStore from "../store/workers.js";
import type { Connections } from "./connections.js";
import type { OAuthSettings } from "./settings.js";

export interface SchedulerOptions {
  db: Kysely<Database>;
  connections: Connections;
  /** The live manifest's settings for a capability (current secrets). */
  settingsFor(worker: WorkerRow, key: string): Promise<OAuthSettings>;
  log: Logger;
  /** Refreshes at once, at most. */
  concurrency?: number;
  /** How often it looks for due connections when there were none. */
  idleMs?: number;
  now?: () => number;
}

/**
 * Keeps connected tokens fresh before they expire, so runs seldom wait on a provider. Due times
 * come from each token's expiry (next_refresh_at, written with every token), not from when it was
 * last read. Bounded concurrency; each refresh takes the connection's lease without waiting, so
 * with several server processes exactly one refreshes each connection, and failures back off
 * through next_refresh_at.
 */
export class RefreshScheduler {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private running: Promise<void> | undefined;

  constructor(private readonly options: SchedulerOptions) {}

  start(): void {
    this.schedule(0);
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    // A little jitter keeps several processes from polling in lockstep.
    this.timer = setTimeout(() => {
      this.running = this.tick().finally(() => (this.running = undefined));
    }, delayMs + Math.random() * 100);
    this.timer.unref();
  }

  private now(): number {
    return this.options.now?.() ?? Date.now();
  }

  /** One pass: refreshes every due connection found, then waits for the next. */
  async tick(): Promise<void> {
    const { db, log } = this.options;
    let found = 0;
    try {
      const due = await oauthStore.dueConnections(db, this.now(), 500);
      found = due.length;
      await this.inParallel(due, (row) => this.refreshOne(row));
    } catch (error) {
      log.error({ err: error }, "background refresh pass failed");
    }
    this.schedule(found > 0 ? 0 : (this.options.idleMs ?? 1000));
  }

  private async refreshOne(row: OauthConnectionRow): Promise<void> {
    const { db, connections, log } = this.options;
    const worker = await workersStore.findWorkerById(db, row.worker_id);
    if (!worker) return;
    let settings: OAuthSettings;
    try {
      settings = await this.options.settingsFor(worker, row.capability_key);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      await this.options.connections.postpone(row, this.now() + 15 * 60 * 1000, `Background refresh could not read the configuration: ${reason}`);
      log.warn({ workerId: worker.id, capability: row.capability_key, reason }, "background refresh postponed");
      return;
    }
    await connections.refreshInBackground(worker, settings, row);
  }

  private async inParallel<T>(items: T[], work: (item: T) => Promise<void>): Promise<void> {
    let next = 0;
    const lanes = Array.from({ length: Math.min(this.options.concurrency ?? 8, items.length) }, async () => {
      while (next < items.length && !this.stopped) {
        const item = items[next++]!;
        await work(item).catch((error: unknown) => this.options.log.warn({ err: error }, "background refresh failed"));
      }
    });
    await Promise.all(lanes);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }
}
