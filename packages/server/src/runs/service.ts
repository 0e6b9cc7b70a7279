import type { Kysely } from "kysely";
import type { Caller } from "../auth/tokens.js";
import type { BuildService } from "../builder/service.js";
import { capabilitiesOf, type CapabilitySummary } from "../builder/manifest.js";
import { AppError } from "../errors.js";
import { EXIT_CODES, LIMITS } from "../executor/limits.js";
import type { Executor } from "../executor/pool.js";
import { describeRunError, tidyStack, whyNotRunnable, type EnvPatch } from "../executor/protocol.js";
import { LoadError, type RunOutcome } from "../executor/sandbox.js";
import { newId } from "../ids.js";
import { LineQueue, type OutputLine } from "../line-queue.js";
import type { Logger } from "../log.js";
import { isForeignKeyViolation, StoreBusyError } from "../store/db.js";
import * as runsStore from "../store/runs.js";
import type { RunSummary } from "../store/runs.js";
import { RunJournal } from "./journal.js";
import type { SqliteWriter } from "../store/sqlite-writer.js";
import type { Database, RunRow, WorkerRow } from "../store/schema.js";
import type { WorkerService } from "../workers/service.js";

/**
 * Variables a run gets besides the worker's secrets: OAuth access tokens, valid at its start;
 * hints for tokens it could not get; and renewals to run while it goes on (a refreshed token is
 * pushed into the running process).
 */
export type RunEnvSource = (worker: WorkerRow, capabilities: readonly CapabilitySummary[]) => Promise<RunEnv>;

/** What a run's process gets besides the worker's secrets: its tokens, with how to renew them. */
export interface RunEnv {
  env: EnvPatch;
  /** What to tell the caller when the worker asks for a token it could not get, by variable. */
  hints: Pick<ReadonlyMap<string, string>, "get">;
  renewals: readonly Renewal[];
}

/** A worker with no OAuth capability: nothing to add, the same object for every run. */
export const NO_RUN_ENV: RunEnv = Object.freeze({ env: Object.freeze({}), hints: Object.freeze({ get: () => undefined }), renewals: Object.freeze([]) });

/** A token to renew while a run goes on: at `at`; `renew` answers when to renew it next (or null). */
export interface Renewal {
  at: number;
  renew(): Promise<number | null>;
}

/** A capability to run, and its input. */
export interface RunRequest {
  workerId: string;
  capabilityKey: string;
  args?: unknown;
  /** A shorter time limit than the server's (a webhook's verify runs within its budget). */
  timeoutMs?: number;
  /** The input is a webhook verify invocation (`{ request }`), not events: the server's own, never an API caller's. */
  webhookVerify?: true;
  /** The webhook delivery this run attempts, recorded with it. */
  deliveryId?: string;
}

/**
 * What a run reports as it goes: its id once it starts, its output line by line, then its result
 * or why it failed (with its id, unless it failed before it had one).
 */
export type RunEvent =
  | { kind: "started"; runId: string }
  | OutputLine
  | { kind: "succeeded"; runId: string; result: unknown }
  | { kind: "failed"; message: string; runId?: string };

export interface RunService {
  /** Runs a capability to its end: its result, or an AppError run_failed naming the run. */
  run(caller: Caller, request: RunRequest): Promise<{ result: unknown; runId: string }>;
  /**
   * The same run, its events as they happen. What fails before the run exists (validation, a
   * worker that fails to load, a full queue) throws here, before the first event.
   */
  stream(caller: Caller, request: RunRequest): Promise<AsyncIterable<RunEvent>>;
  /**
   * One run whose failure is an outcome, not an error (a webhook delivery's attempt): the run's
   * id, and the error's name and message when it failed. What fails before the run exists throws.
   */
  attempt(
    caller: Caller,
    request: RunRequest,
  ): Promise<{ runId: string; ok: true; value: unknown } | { runId: string; ok: false; errorName: string; message: string; collateral: boolean }>;
  /** The worker's newest runs, without their logs. */
  list(caller: Caller, workerId: string): Promise<RunSummary[]>;
  logs(caller: Caller, workerId: string, runId: string): Promise<{ logs: string; run: RunRow }>;
  /** Resolves once the records of every run that answered so far are committed. */
  settled(): Promise<void>;
}

/** A run still going after this long appears in `runs list` as running. */
export const RECORD_RUNNING_AFTER_MS = 200;

export function createRunService(options: {
  db: Kysely<Database>;
  workers: WorkerService;
  builder: BuildService;
  executor: Executor;
  runTimeoutMs: number;
  runEnv?: RunEnvSource;
  /** SQLite: run records commit on this writer thread (see store/sqlite-writer.ts). */
  writer?: SqliteWriter;
  log: Logger;
  now?: () => number;
}): RunService {
  const { db, workers, builder, executor, log } = options;
  const now = options.now ?? Date.now;
  const journal = new RunJournal(db, options.writer);

  async function prepare(caller: Caller, request: RunRequest) {
    const { capabilityKey: key, args } = request;
    const worker = await workers.get(caller, request.workerId);
    const deployment = await builder.liveDeployment(worker);
    if (!deployment) {
      throw new AppError("no_live_deployment", "This worker has no live deployment yet.", { hint: "Run `ntn workers deploy` first." });
    }
    const capabilities = capabilitiesOf(deployment);
    const refusal = whyNotRunnable(capabilities, key);
    if (refusal) throw new AppError(refusal.code, refusal.message, { hint: refusal.hint });
    const input = args === undefined ? {} : args;
    // The SDK hands a webhook's input to its execute as the events; an object there would be
    // taken for a verify request, or reach the worker's loop over events as something else.
    if (capabilities.find((c) => c.key === key)?._tag === "webhook" && !Array.isArray(input) && !request.webhookVerify) {
      throw new AppError("validation_error", "A webhook capability takes an array of events, not an object.", {
        hint: `Pass the events as an array, e.g. -d '[{"deliveryId":"test-1","body":{},"rawBody":"{}","headers":{},"method":"POST"}]'.`,
      });
    }
    // A delivery's events are the server's own making, bounded by the ingress body limit (body and
    // rawBody both carry it): only a caller's input has this bound.
    if (!request.deliveryId && JSON.stringify(input).length > LIMITS.inputBytes) {
      throw new AppError("input_too_large", `The input is larger than ${LIMITS.inputBytes / 1024} KiB.`);
    }
    const runtime = options.runEnv ? await options.runEnv(worker, capabilities) : NO_RUN_ENV;
    return { worker, deployment, input, runtime };
  }

  /** Everything checked, and a process reserved: past this point the run happens. */
  async function admit(caller: Caller, request: RunRequest) {
    // Records waiting past the bound (the database out of reach): a run now could not be recorded.
    if (journal.full) throw new StoreBusyError(new Error("run records are waiting for the database"));
    const prepared = await prepare(caller, request);
    const target = await builder.execTarget(prepared.worker, prepared.deployment, { workerIsFresh: true });
    // A full queue answers 503 overloaded here, before any run exists or a stream starts.
    let reservation;
    try {
      reservation = await executor.reserve(target);
    } catch (error) {
      if (error instanceof LoadError) throw await recordLoadFailure(prepared, request.capabilityKey, error, request.deliveryId);
      throw error;
    }
    return { ...prepared, reservation };
  }

  /** A worker that failed to load when a run started it: a failed run, with its output and stack. */
  async function recordLoadFailure(
    prepared: Awaited<ReturnType<typeof prepare>>,
    capabilityKey: string,
    error: LoadError,
    deliveryId: string | undefined,
  ): Promise<LoadError> {
    const runId = newId();
    const at = now();
    const trace = tidyStack(error.error.stack && error.error.stack.includes("\n") ? error.error.stack : `${error.error.name}: ${error.error.message}`);
    const recorded = journal.whole({
      id: runId,
      workspace_id: prepared.worker.workspace_id,
      worker_id: prepared.worker.id,
      deployment_id: prepared.deployment.id,
      capability_key: capabilityKey,
      status: "failed",
      exit_code: EXIT_CODES.error,
      started_at: at,
      ended_at: at,
      duration_ms: 0,
      error: error.message,
      logs: `${error.logs}${error.logs && !error.logs.endsWith("\n") ? "\n" : ""}[workyard] the worker failed to load: ${trace}\n`,
      delivery_id: deliveryId ?? null,
    });
    // The answer names the run: its record commits now, not at the end of the interval.
    await Promise.all([recorded, journal.settled()]);
    return new LoadError(error.error, error.logs, { runId });
  }

  async function execute(
    admitted: Awaited<ReturnType<typeof admit>>,
    request: RunRequest,
    onEvent: (event: RunEvent) => void,
  ): Promise<{ runId: string; outcome: RunOutcome; message?: string }> {
    const { worker, deployment, input, runtime, reservation } = admitted;
    const runId = newId();
    const startedAt = now();
    const startRow = {
      id: runId,
      workspace_id: worker.workspace_id,
      worker_id: worker.id,
      deployment_id: deployment.id,
      capability_key: request.capabilityKey,
      status: "running" as const,
      exit_code: null,
      started_at: startedAt,
      ended_at: null,
      duration_ms: null,
      error: null,
      logs: null,
      delivery_id: request.deliveryId ?? null,
    };
    // Most runs end in a few milliseconds: they are recorded once, whole, in one commit. A run
    // still going after RECORD_RUNNING_AFTER_MS is recorded as running, then updated when it ends.
    // A worker deleted while its run went on takes its runs with it: nothing is wrong then.
    const recordFailed = (what: string) => (error: unknown) => {
      if (isForeignKeyViolation(error)) log.info({ runId, workerId: startRow.worker_id }, "a run of a deleted worker was not recorded");
      else log.error({ err: error, runId }, what);
    };
    let recordedStart: Promise<void> | undefined;
    const startTimer = setTimeout(() => {
      recordedStart = journal.start(startRow);
      recordedStart.catch(recordFailed("recording a run's start failed"));
    }, RECORD_RUNNING_AFTER_MS);
    onEvent({ kind: "started", runId });
    let logs = "";
    const onLog = (stream: "stdout" | "stderr", data: string) => {
      // The worker process caps its output; its own notice of that always gets in.
      // The sandbox caps a run's output and adds its own notice past the cap: room for that, no more.
      if (logs.length + data.length <= LIMITS.logBytes + 1024) logs += data;
      // The SDK's console lines end in \n; the official CLI adds its own.
      onEvent({ kind: "output", stream, data: data.endsWith("\n") ? data.slice(0, -1) : data });
    };
    let outcome: RunOutcome;
    // Each token is renewed before it expires, again and again, for as long as the run goes on.
    const timers = new Set<NodeJS.Timeout>();
    let ended = false;
    const plan = (renewal: Renewal, at: number) => {
      const timer = setTimeout(() => {
        timers.delete(timer);
        renewal.renew().then(
          (next) => {
            if (!ended && next !== null) plan(renewal, Math.max(next, now() + 1000));
          },
          (error: unknown) => {
            log.warn({ runId, reason: (error as Error).message }, "token renewal during a run failed");
            if (!ended) plan(renewal, now() + 5000);
          },
        );
      }, Math.max(0, at - now()));
      timers.add(timer);
    };
    for (const renewal of runtime.renewals) plan(renewal, renewal.at);
    try {
      outcome = await reservation.run({
        runId,
        key: request.capabilityKey,
        input,
        env: runtime.env,
        timeoutMs: Math.min(request.timeoutMs ?? options.runTimeoutMs, options.runTimeoutMs),
        onLog,
      });
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      outcome = { ok: false, error: { name: "RunFailed", message }, exitCode: EXIT_CODES.error, reason: "crash", processLost: true };
      log.warn({ runId, workerId: worker.id, reason: message }, "run could not start");
    } finally {
      ended = true;
      for (const timer of timers) clearTimeout(timer);
    }
    let message: string | undefined;
    if (!outcome.ok) {
      message = describeRunError(outcome.error);
      // A tool that asked for a connection that is not usable: say how to fix it.
      const missing = /Missing OAuth access token env var "([^"]+)"/.exec(outcome.error.message);
      const hint = missing ? runtime.hints.get(missing[1]!) : undefined;
      if (hint) message = `${message}\n${hint}`;
      const trace = tidyStack(outcome.error.stack && outcome.error.stack.includes("\n") ? outcome.error.stack : `${outcome.error.name}: ${outcome.error.message}`);
      logs += `${logs && !logs.endsWith("\n") ? "\n" : ""}[workyard] run failed (exit ${outcome.exitCode}): ${trace}\n`;
    }
    const endedAt = now();
    clearTimeout(startTimer);
    const end = {
      status: outcome.ok ? ("succeeded" as const) : ("failed" as const),
      exit_code: outcome.exitCode,
      ended_at: endedAt,
      duration_ms: endedAt - startedAt,
      error: message ?? null,
      logs,
    };
    // The answer does not wait for the commit (journal.ts): this process's own reads of runs wait
    // for it instead (settled), and a failure to record is the operator's to see in the log. A
    // finish is queued at once, behind its start: the journal commits in the order it was given.
    const recorded = recordedStart ? journal.finish(runId, end) : journal.whole({ ...startRow, ...end });
    recorded.catch(recordFailed("recording a run failed"));
    return message === undefined ? { runId, outcome } : { runId, outcome, message };
  }

  return {
    async stream(caller, request) {
      // Validation errors and a full queue answer as plain errors, before any stream starts.
      const admitted = await admit(caller, request);
      const queue = new LineQueue<RunEvent>();
      execute(admitted, request, (event) => queue.push(event))
        .then(({ runId, outcome, message }) => {
          if (outcome.ok) queue.push({ kind: "succeeded", runId, result: outcome.value });
          else queue.push({ kind: "failed", message: message ?? "Run failed.", runId });
        })
        .catch((error: unknown) => {
          queue.push({ kind: "failed", message: error instanceof AppError ? error.message : "Run failed: internal error." });
          if (!(error instanceof AppError)) log.error({ err: error }, "streamed run failed");
        })
        .finally(() => queue.end());
      return queue;
    },

    async run(caller, request) {
      const admitted = await admit(caller, request);
      const { runId, outcome, message } = await execute(admitted, request, () => {});
      if (outcome.ok) return { result: outcome.value, runId };
      throw new AppError("run_failed", message ?? "Run failed.", {
        hint: `See the run's logs: ntn workers runs logs ${runId}`,
        details: { runId, exitCode: outcome.exitCode },
      });
    },

    async attempt(caller, request) {
      const admitted = await admit(caller, request);
      const { runId, outcome, message } = await execute(admitted, request, () => {});
      if (outcome.ok) return { runId, ok: true, value: outcome.value };
      return { runId, ok: false, errorName: outcome.error.name, message: message ?? outcome.error.message, collateral: outcome.collateral === true };
    },

    async list(caller, workerId) {
      const worker = await workers.get(caller, workerId);
      // Runs this process answered are listed even when their records are still being committed.
      await journal.settled();
      return runsStore.listRuns(db, worker.id, 100);
    },

    async logs(caller, workerId, runId) {
      const worker = await workers.get(caller, workerId);
      await journal.settled();
      const row = await runsStore.findRun(db, worker.id, runId);
      if (!row) {
        throw new AppError("run_not_found", `Run ${JSON.stringify(runId)} not found for this worker.`, {
          hint: "Run `ntn workers runs list` to see its runs.",
        });
      }
      return { logs: row.logs ?? "", run: row };
    },

    settled: () => journal.settled(),
  };
}
