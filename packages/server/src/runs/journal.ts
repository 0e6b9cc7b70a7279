import type { CompiledQuery, Kysely } from "kysely";
import { runFinish, runInsert, runsInsert, type RunEnd } from "../store/runs.js";
import { isTransientStoreError } from "../store/db.js";
import type { SqliteWriter } from "../store/sqlite-writer.js";
import type { Database, RunRow } from "../store/schema.js";

/** A record and its caller's promise; `queuedAt` bounds how long it is tried. */
type Entry = (
  | { kind: "start"; row: RunRow }
  | { kind: "whole"; row: RunRow }
  | { kind: "finish"; end: RunEnd }
) & { done: (error?: unknown) => void; queuedAt: number };

/** How long records wait to be committed together: a killed server loses at most this much of them. */
export const COMMIT_INTERVAL_MS = 100;

export interface JournalLimits {
  /**
   * Records held at most (a database out of reach for a while): past this, new runs are refused
   * (503) rather than run with no room to record them.
   */
  maxBacklog: number;
  /** How long a record is tried again while the database is busy or out of reach, before it is given up (and logged). */
  retryForMs: number;
  /** The first wait before trying again; it doubles up to 5 s. */
  retryMs: number;
}

const DEFAULT_LIMITS: JournalLimits = { maxBacklog: 20_000, retryForMs: 60_000, retryMs: 250 };

/**
 * Run records with group commit: what is queued within one commit interval is written in one
 * transaction, so runs share a durable commit (one fsync on SQLite) instead of paying one each;
 * a commit per run, even on the writer thread, cost a run at one connection half its latency (the
 * fsync and the writer's work compete with the next run on two cores). Each call's promise settles
 * when its record is committed; the run service answers without waiting for it (a server killed
 * after answering loses at most the records of the last interval), and `settled()` commits what is
 * queued at once, for readers of this process and for a graceful stop.
 */
export class RunJournal {
  private queue: Entry[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing = false;
  /** A reader waits: what is queued commits as soon as the commit under way (if any) ends. */
  private urgent = false;
  /** The last record queued, settled either way: batches commit in order, so every earlier one is too. */
  private last: Promise<void> = Promise.resolve();
  /** The wait before the next try while the database is busy or out of reach; 0 while it answers. */
  private backoffMs = 0;
  private readonly limits: JournalLimits;

  /** With SQLite, commits go through `writer`, off the main thread; otherwise through `db`. */
  constructor(
    private readonly db: Kysely<Database>,
    private readonly writer?: SqliteWriter,
    private readonly intervalMs = COMMIT_INTERVAL_MS,
    limits: Partial<JournalLimits> = {},
    private readonly now: () => number = Date.now,
  ) {
    this.limits = { ...DEFAULT_LIMITS, ...limits };
  }

  /** Whether records wait beyond the bound: a run now would have no room to be recorded. */
  get full(): boolean {
    return this.queue.length >= this.limits.maxBacklog;
  }

  private compile(entry: Entry): CompiledQuery {
    return entry.kind === "finish" ? runFinish.compile(this.db, entry.end) : runInsert.compile(this.db, entry.row);
  }

  start(row: RunRow): Promise<void> {
    return this.enqueue((done) => ({ kind: "start", row, done, queuedAt: this.now() }));
  }

  /** A run that ended before its start was recorded: one row, one commit. */
  whole(row: RunRow): Promise<void> {
    return this.enqueue((done) => ({ kind: "whole", row, done, queuedAt: this.now() }));
  }

  finish(id: string, fields: Omit<RunEnd, "id">): Promise<void> {
    return this.enqueue((done) => ({ kind: "finish", end: { ...fields, id }, done, queuedAt: this.now() }));
  }

  /** Commits what is queued now, and resolves once every record queued before the call is committed (or failed). */
  settled(): Promise<void> {
    if (this.queue.length > 0) {
      this.urgent = true;
      clearTimeout(this.timer);
      this.timer = undefined;
      this.schedule();
    }
    return this.last;
  }

  private enqueue(make: (done: (error?: unknown) => void) => Entry): Promise<void> {
    const committed = new Promise<void>((resolve, reject) => {
      this.queue.push(make((error) => (error === undefined ? resolve() : reject(error))));
      this.schedule();
    });
    this.last = committed.then(
      () => undefined,
      () => undefined,
    );
    return committed;
  }

  /**
   * A commit of what is queued, one interval from now (or the backoff's, while the database is
   * busy or out of reach), unless one is planned or under way.
   */
  private schedule(): void {
    if (this.timer || this.flushing || this.queue.length === 0) return;
    if (this.urgent && this.backoffMs === 0) {
      void this.flush();
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, this.backoffMs || this.intervalMs);
  }

  /**
   * Records the database could not take for now go back to the head of the queue, in order, to be
   * tried again after a growing wait; those tried for too long are given up (their callers log them).
   */
  private retryLater(entries: Entry[], error: unknown): void {
    const deadline = this.now() - this.limits.retryForMs;
    const kept = entries.filter((entry) => {
      if (entry.queuedAt > deadline) return true;
      entry.done(error);
      return false;
    });
    this.queue = kept.concat(this.queue);
    this.backoffMs = Math.min(5000, this.backoffMs === 0 ? this.limits.retryMs : this.backoffMs * 2);
  }

  /** Commits one record; answers the records to try again later (itself, if the database was out of reach). */
  private async commitAlone(entry: Entry): Promise<Entry[]> {
    try {
      const query = this.compile(entry);
      if (this.writer) await this.writer.transaction([query]);
      else await this.db.executeQuery(query);
      entry.done();
      return [];
    } catch (error) {
      if (isTransientStoreError(error)) return [entry];
      entry.done(error);
      return [];
    }
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    this.urgent = false;
    const batch = this.queue;
    this.queue = [];
    try {
      const rows = batch.flatMap((entry) => (entry.kind === "finish" ? [] : [entry.row]));
      if (this.writer) {
        // SQLite: one transaction on the writer thread (one fsync for the batch).
        await this.writer.transaction(batch.map((entry) => this.compile(entry)));
      } else if (rows.length === batch.length) {
        // Rows only: one statement, atomic by itself, one round trip (not begin, n inserts, commit).
        await this.db.executeQuery(rows.length === 1 ? runInsert.compile(this.db, rows[0]!) : runsInsert(this.db, rows));
      } else {
        const queries = batch.map((entry) => this.compile(entry));
        await this.db.transaction().execute(async (trx) => {
          for (const query of queries) await trx.executeQuery(query);
        });
      }
      this.backoffMs = 0;
      for (const entry of batch) entry.done();
    } catch (error) {
      if (isTransientStoreError(error)) {
        // Busy or out of reach: nothing of the batch is lost yet; it is tried again.
        this.retryLater(batch, error);
      } else if (batch.length === 1) {
        batch[0]!.done(error);
      } else {
        // One bad record (a run of a worker deleted meanwhile) must not take the batch's others
        // with it: each is committed alone, and only what fails alone fails.
        const again: Entry[] = [];
        for (const entry of batch) again.push(...(await this.commitAlone(entry)));
        if (again.length > 0) this.retryLater(again, error);
      }
    } finally {
      this.flushing = false;
      // What came in meanwhile waits its interval, unless a reader asked for it (settled).
      this.schedule();
    }
  }
}
