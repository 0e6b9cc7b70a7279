import type { CompiledQuery, Kysely } from "kysely";
import { prepared } from "./prepared.js";
import type { Database, RunRow } from "./schema.js";

type Db = Kysely<Database>;

/** What a run's final update writes. */
export type RunEnd = Pick<RunRow, "id" | "status" | "exit_code" | "ended_at" | "duration_ms" | "error" | "logs">;

/** A run record's insert and its final update, compiled once (the run journal writes them on a thread). */
export const runInsert = prepared((db: Db, run: RunRow) =>
  db.insertInto("runs").values({
    id: run.id,
    workspace_id: run.workspace_id,
    worker_id: run.worker_id,
    deployment_id: run.deployment_id,
    capability_key: run.capability_key,
    status: run.status,
    exit_code: run.exit_code,
    started_at: run.started_at,
    ended_at: run.ended_at,
    duration_ms: run.duration_ms,
    error: run.error,
    logs: run.logs,
    delivery_id: run.delivery_id,
  }),
);

/** Several runs' rows in one statement (atomic by itself): one round trip for a batch of records. */
export function runsInsert(db: Db, runs: RunRow[]): CompiledQuery {
  return db.insertInto("runs").values(runs).compile();
}

export const runFinish = prepared((db: Db, run: RunEnd) =>
  db
    .updateTable("runs")
    .set({ status: run.status, exit_code: run.exit_code, ended_at: run.ended_at, duration_ms: run.duration_ms, error: run.error, logs: run.logs })
    .where("id", "=", run.id),
);

/** A run as listed: everything but its logs and deployment. */
export type RunSummary = Omit<RunRow, "logs" | "deployment_id">;

/** The newest runs of a worker, without their logs. */
export async function listRuns(db: Db, workerId: string, limit: number): Promise<RunSummary[]> {
  return db
    .selectFrom("runs")
    .select(["id", "workspace_id", "worker_id", "capability_key", "status", "exit_code", "started_at", "ended_at", "duration_ms", "error", "delivery_id"])
    .where("worker_id", "=", workerId)
    .orderBy("started_at", "desc")
    .orderBy("id", "desc")
    .limit(limit)
    .execute();
}

export async function findRun(db: Db, workerId: string, runId: string): Promise<RunRow | undefined> {
  return db.selectFrom("runs").selectAll().where("worker_id", "=", workerId).where("id", "=", runId).executeTakeFirst();
}

/** Runs left "running" by a server that stopped: recorded as failed once it is back. */
export async function failInterruptedRuns(db: Db, startedBefore: number, now: number): Promise<number> {
  const result = await db
    .updateTable("runs")
    .set({ status: "failed", exit_code: 1, ended_at: now, error: "The run was interrupted (the server stopped)." })
    .where("status", "=", "running")
    .where("started_at", "<", startedBefore)
    .executeTakeFirst();
  return Number(result.numUpdatedRows);
}

/**
 * Retention: deletes runs (and so their logs) that ended before `endedBefore`, never a running one.
 * In batches, so a first sweep over a long history never holds the writer lock for long; the
 * `runs_started` index finds them (a run that ended before the cutoff started before it too).
 */
export async function deleteRunsEndedBefore(db: Db, endedBefore: number, batchSize = 1000): Promise<number> {
  let total = 0;
  for (;;) {
    const result = await db
      .deleteFrom("runs")
      .where("id", "in", (eb) =>
        eb
          .selectFrom("runs")
          .select("id")
          .where("started_at", "<", endedBefore)
          .where("status", "!=", "running")
          .where("ended_at", "<", endedBefore)
          .limit(batchSize),
      )
      .executeTakeFirst();
    const deleted = Number(result.numDeletedRows);
    total += deleted;
    if (deleted < batchSize) return total;
  }
}
