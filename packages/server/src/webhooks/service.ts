import os from "node:os";
import type { Kysely } from "kysely";
import type { Caller } from "../auth/tokens.js";
import type { BuildService } from "../builder/service.js";
import { capabilitiesOf, type CapabilitySummary } from "../builder/manifest.js";
import { AppError } from "../errors.js";
import { newId, randomToken, safeEqual, sha256Hex } from "../ids.js";
import type { Logger } from "../log.js";
import type { RunService } from "../runs/service.js";
import type { ChangeFeed } from "../store/changes.js";
import type { Dialect } from "../store/db.js";
import { ReadCache } from "../store/read-cache.js";
import type { Database, DeliveryRow, DeliveryStatus, WebhookRow, WorkerRow } from "../store/schema.js";
import * as webhooksStore from "../store/webhooks.js";
import type { Keyring } from "../vault/keyring.js";
import { aad, open, seal } from "../vault/seal.js";
import type { WorkerService } from "../workers/service.js";
import { RateLimiter } from "./rate-limit.js";

/** What a webhook capability's URL ends with, after the public URL. */
export const WEBHOOK_PATH = "/webhooks/worker";

/** The wait before trying a delivery again after an attempt that does not count (the server too busy, a run stopped for another's). */
const UNCOUNTED_RETRY_MS = 2000;
/** Runs of one delivery stopped for another run's time limit that are not counted as attempts. */
const MAX_SPARED_RUNS = 3;

/** Consecutive verification failures that block a webhook (Notion's figure). */
export const BLOCK_AFTER = 5;

export interface WebhookLimits {
  /** The largest body accepted. */
  maxBodyBytes: number;
  /** Deliveries waiting to run past which new ones get 503: in one workspace (so one tenant cannot fill the queue for all), and in all. */
  maxQueued: { perWorkspace: number; total: number };
  /** Waits before the retries of a failed attempt: one retry per entry (Notion: 3). */
  retryDelaysMs: number[];
  /** Attempts run at once by this process (as many as a worker process takes runs at once: they share it). */
  concurrency: number;
  /** How often this process looks for due deliveries (others' and retries) besides being woken. */
  pollMs: number;
  /** Ingress requests per minute, per worker and per workspace (Notion's figures), in each process. */
  ratePerMinute: { perWorker: number; perWorkspace: number };
  /** The wall-clock budget of a `verify` handler, its process start included. */
  verifyBudgetMs: number;
}

export const DEFAULT_WEBHOOK_LIMITS: WebhookLimits = {
  maxBodyBytes: 1024 * 1024,
  maxQueued: { perWorkspace: 2_500, total: 10_000 },
  retryDelaysMs: [10_000, 60_000, 300_000],
  concurrency: 16,
  pollMs: 1000,
  ratePerMinute: { perWorker: 600, perWorkspace: 1200 },
  verifyBudgetMs: 5000,
};

/** The largest body a `verify` handler may answer with. */
export const VERIFY_BODY_MAX = 8 * 1024;

/** A request as the ingress received it. */
export interface InboundRequest {
  method: string;
  /** The URL as received (path and query). */
  url: string;
  query: Record<string, string>;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** What the ingress answers: a status, a JSON body (or a verify handler's text), and headers. */
export interface IngressAnswer {
  status: number;
  body: Record<string, unknown> | string;
  headers?: Record<string, string>;
}

export interface DeliveryView {
  deliveryId: string;
  status: DeliveryStatus;
  attempts: number;
  runIds: string[];
  receivedAt: string;
  finishedAt: string | null;
  error: string | null;
}

export interface WebhookView {
  key: string;
  url: string;
  status: "active" | "blocked" | "verification off";
  verificationFailures: number;
  lastDelivery: { status: DeliveryStatus; receivedAt: string } | null;
}

export interface WebhookService {
  /** After a deployment went live: URLs for its new webhook capabilities (lines for the build log); a redeploy unblocks. */
  deployed(worker: WorkerRow, capabilities: CapabilitySummary[]): Promise<string[]>;
  list(caller: Caller, workerId: string): Promise<WebhookView[]>;
  deliveries(caller: Caller, workerId: string, key: string): Promise<DeliveryView[]>;
  /** Runs a finished delivery again, with the same deliveryId. */
  redeliver(caller: Caller, workerId: string, deliveryId: string): Promise<void>;
  /** A new URL for the webhook; the old one answers 404 from now on. */
  rotate(caller: Caller, workerId: string, key: string): Promise<string>;
  unblock(caller: Caller, workerId: string, key: string): Promise<void>;
  /** Verification on or off (the verify handler runs, verification failures count); either resets the count and unblocks. */
  setVerification(caller: Caller, workerId: string, key: string, enabled: boolean): Promise<void>;
  /** The ingress: checks, stores durably, answers 202 (or why not). */
  receive(path: { workspaceId: string; workerId: string; secretId: string; key: string }, request: InboundRequest): Promise<IngressAnswer>;
  /** Starts running due deliveries in this process. */
  start(): void;
  /** Stops taking deliveries and waits for the attempts under way. */
  stop(): Promise<void>;
}

/** The stored request: what the worker's event is made of. */
interface StoredRequest {
  method: string;
  headers: Record<string, string>;
  /** The bytes as received (base64): a body that is not UTF-8 is kept as it came. */
  bodyBase64: string;
}

const NOT_FOUND: IngressAnswer = { status: 404, body: { error: "Not found" } };

export function createWebhookService(options: {
  db: Kysely<Database>;
  /** Webhook rows are kept in memory for the ingress; writes to them are told here (changes.ts). */
  changes: ChangeFeed;
  /**
   * Where a delivery's insert goes, durable before its 202: on SQLite the writer's (sqlite-writer.ts),
   * so its commit never stalls the server's thread; else `db`.
   */
  writes: Kysely<Database>;
  /**
   * Where an attempt's writes go (claims, lease renewals, ends): as `writes`, but on SQLite
   * committed without waiting for the disk. A power failure that undoes one leaves the delivery
   * queued or running under a lease that runs out, so it runs again: at least once still holds.
   */
  attemptWrites: Kysely<Database>;
  dialect: Dialect;
  keyring: Keyring;
  workers: WorkerService;
  builder: Pick<BuildService, "liveDeployment" | "liveManifest">;
  runs: Pick<RunService, "attempt">;
  publicUrl(): string;
  log: Logger;
  runTimeoutMs: number;
  limits?: Partial<WebhookLimits>;
  now?: () => number;
}): WebhookService {
  const { db, writes, attemptWrites, keyring, log } = options;
  const now = options.now ?? Date.now;
  const limits = { ...DEFAULT_WEBHOOK_LIMITS, ...options.limits };
  // Who holds a delivery's lease: this process, told apart from others on the same database.
  const owner = `${os.hostname()}:${process.pid}:${randomToken(6)}`;
  // A lease outlives the longest attempt (its run's time limit), with room to record it.
  const leaseMs = options.runTimeoutMs + 10_000;

  const perWorker = new RateLimiter(limits.ratePerMinute.perWorker, now);
  const perWorkspace = new RateLimiter(limits.ratePerMinute.perWorkspace, now);
  const waiting = new WaitingCounts(db, now);

  // Webhook rows as the ingress reads them on every request. Every write of them publishes the
  // worker's id (writeWebhooks); a key rotation of the vault reseals `secret_sealed` unannounced,
  // which the ingress never reads (it checks the hash): only URLs are built from it, from fresh rows.
  const webhookRows = new ReadCache<WebhookRow>(options.changes, "webhooks", (row) => row.worker_id);
  const webhookRow = (workerId: string, key: string) => webhookRows.get(`${workerId}/${key}`, () => webhooksStore.findWebhook(db, workerId, key));
  /** A write of a worker's webhook rows, announced to every server process with its commit. */
  const writeWebhooks = <T>(workerId: string, write: (trx: Kysely<Database>) => Promise<T>) =>
    options.changes.transaction(db, async (trx, publish) => {
      const result = await write(trx);
      publish({ table: "webhooks", id: workerId });
      return result;
    });

  const urlOf = (row: WebhookRow) => {
    const secretId = open(keyring, { keyId: row.secret_key_id, sealed: row.secret_sealed }, aad.webhookSecret(row.workspace_id, row.worker_id, row.key)).toString("utf8");
    return `${options.publicUrl()}${WEBHOOK_PATH}/${row.workspace_id}/${row.worker_id}/${secretId}/${encodeURIComponent(row.key)}`;
  };

  const newSecret = (worker: Pick<WorkerRow, "id" | "workspace_id">, key: string) => {
    const secretId = randomToken(24);
    const sealed = seal(keyring, secretId, aad.webhookSecret(worker.workspace_id, worker.id, key));
    return { hash: sha256Hex(secretId), keyId: sealed.keyId, sealed: sealed.sealed };
  };

  /** The keys of the webhook capabilities the worker's live deployment has (a row may outlive its capability). */
  async function liveWebhookKeys(worker: WorkerRow): Promise<Set<string>> {
    const live = await options.builder.liveDeployment(worker);
    return new Set(capabilitiesOf(live).filter((c) => c._tag === "webhook").map((c) => c.key));
  }

  /** Who a webhook's runs act as: the worker's own workspace, with no API token behind them. */
  const callerFor = (workspaceId: string, what: string): Caller => ({ tokenId: "", tokenName: what, workspaceId, workspaceName: "", role: "member" });

  /** A webhook capability of the worker's live deployment, with its row, for the management commands. */
  async function webhookOf(caller: Caller, workerId: string, key: string): Promise<{ worker: WorkerRow; row: WebhookRow }> {
    const worker = await options.workers.get(caller, workerId);
    const row = await webhooksStore.findWebhook(db, worker.id, key);
    if (!row || !(await liveWebhookKeys(worker)).has(key)) {
      throw new AppError("webhook_not_found", `The worker has no webhook ${JSON.stringify(key)}.`, { hint: "Run `ntn workers webhooks list` to see its webhooks." });
    }
    return { worker, row };
  }

  /**
   * The capability's `verify` handler, inline, within the budget (its process start included): its
   * answer goes back to the sender, wrapped in `accepted` when it is 2xx and the delivery goes on.
   */
  async function verified(worker: WorkerRow, key: string, request: InboundRequest, startedAt: number): Promise<IngressAnswer | { accepted: IngressAnswer }> {
    const caller = callerFor(worker.workspace_id, "webhook verify");
    const verifyRequest = {
      method: request.method,
      url: `${options.publicUrl()}${request.url}`,
      query: request.query,
      headers: lowerCased(request.headers),
      rawBody: request.method === "POST" ? request.body.toString("utf8") : "",
    };
    const left = limits.verifyBudgetMs - (now() - startedAt);
    let timer: NodeJS.Timeout | undefined;
    const overBudget = new Promise<"over">((resolve) => (timer = setTimeout(() => resolve("over"), Math.max(0, left))));
    const outcome = await Promise.race([
      options.runs.attempt(caller, { workerId: worker.id, capabilityKey: key, args: { request: verifyRequest }, timeoutMs: Math.max(1, left), webhookVerify: true }).catch(
        (error: unknown) => ({ ok: false as const, runId: "", errorName: "Error", message: (error as Error).message, busy: error instanceof AppError && error.status === 503 }),
      ),
      overBudget,
    ]);
    clearTimeout(timer);
    if (outcome === "over" || (!outcome.ok && ("busy" in outcome ? outcome.busy : /time limit/i.test(outcome.message)))) {
      return { status: 503, body: { error: "The webhook's verification did not answer in time; try again." }, headers: { "retry-after": "5" } };
    }
    if (!outcome.ok) return { status: 400, body: { error: "The webhook's verification refused the request." } };
    const answer = outcome.value as { status?: unknown; body?: unknown; contentType?: unknown } | null;
    const status = typeof answer?.status === "number" && Number.isInteger(answer.status) ? answer.status : 0;
    const body = answer?.body === undefined ? "" : answer.body;
    const contentType = answer?.contentType === undefined ? "text/plain" : answer.contentType;
    const valid =
      ((status >= 200 && status < 300) || (status >= 400 && status < 500)) &&
      typeof body === "string" &&
      Buffer.byteLength(body) <= VERIFY_BODY_MAX &&
      (contentType === "text/plain" || contentType === "application/json");
    if (!valid) return { status: 400, body: { error: "The webhook's verification gave an invalid answer." } };
    const given: IngressAnswer = { status, body: body as string, headers: { "content-type": `${contentType as string}; charset=utf-8` } };
    return status < 300 ? { accepted: given } : given;
  }

  /** The live deployment's webhook capability `key`, with its config (whether it has a `verify`). */
  async function liveCapability(worker: WorkerRow, key: string): Promise<{ config?: Record<string, unknown> } | undefined> {
    try {
      const live = await options.builder.liveManifest(worker, { workerIsFresh: true });
      return live?.manifest.capabilities.find((c) => c._tag === "webhook" && c.key === key);
    } catch (error) {
      // The manifest could not be read anew (the worker fails to load with its current secrets):
      // the delivery is still taken, and its runs will say why they fail.
      log.warn({ workerId: worker.id, reason: (error as Error).message }, "reading a worker's manifest for a webhook failed");
      return (await liveWebhookKeys(worker)).has(key) ? {} : undefined;
    }
  }

  // The dispatcher: attempts under way, and whether a look for due deliveries is wanted.
  /** Attempts under way in this process, by delivery id. */
  const running = new Map<string, Promise<void>>();
  let timer: NodeJS.Timeout | undefined;
  let stopped = true;
  /** The look under way, if any: stop() waits for it, so nothing is claimed after it returns. */
  let looking: Promise<void> | undefined;
  let lookAgain = false;
  /** Whether deliveries may be due that no look has seen (a look after each attempt finds them). */
  let mayBeDue = true;
  /** Deliveries the ingress is storing as claimed by this process, to run at once. */
  const accepting = new Set<Promise<unknown>>();
  /** Slots a claim under way may fill. */
  let claiming = 0;
  /** Attempts this process may still start: what runs, is being stored claimed, or may be claimed counts. */
  const freeSlots = () => limits.concurrency - running.size - accepting.size - claiming;

  function look(): Promise<void> {
    if (stopped) return Promise.resolve();
    if (looking) {
      lookAgain = true;
      return looking;
    }
    looking = lookForDue().finally(() => (looking = undefined));
    return looking;
  }

  async function lookForDue(): Promise<void> {
    try {
      do {
        lookAgain = false;
        const free = freeSlots();
        if (free <= 0) break;
        mayBeDue = false;
        // The slots this claim may fill are taken until it returns (the ingress counts them).
        claiming = free;
        let claimed: DeliveryRow[];
        try {
          claimed = await webhooksStore.claimDue(attemptWrites, options.dialect, newClaim(), now(), now() + leaseMs, free, [...running.keys()]);
        } finally {
          claiming = 0;
        }
        for (const delivery of claimed) startAttempt(delivery);
        if (claimed.length === free) lookAgain = mayBeDue = true;
      } while (lookAgain && !stopped);
    } catch (error) {
      mayBeDue = true;
      log.warn({ err: error }, "looking for webhook deliveries failed");
    }
  }

  /** A token of its own per claim: only this claim's attempts may renew or finish what it took. */
  const newClaim = () => `${owner}:${randomToken(6)}`;

  /**
   * Runs a delivery under this process's claim; once it ends, looks for more if some may be due
   * (deliveries left queued here, a claim that took all it asked for: the timer finds the rest).
   * `afterAnswer`: the ingress's own delivery starts once its 202 has gone out.
   */
  function startAttempt(delivery: DeliveryRow, afterAnswer = false): void {
    const started = afterAnswer ? new Promise<void>((resolve) => setImmediate(resolve)) : Promise.resolve();
    const attempt = started.then(() => runAttempt(delivery)).catch((error: unknown) => log.error({ err: error, deliveryId: delivery.id }, "a webhook delivery's attempt failed"));
    running.set(delivery.id, attempt);
    void attempt.finally(() => {
      running.delete(delivery.id);
      if (mayBeDue) void look();
    });
  }

  /** One attempt at a claimed delivery: a run of the capability, and what it means for the delivery. */
  async function runAttempt(delivery: DeliveryRow): Promise<void> {
    const claim = delivery.lease_owner!;
    // The lease is renewed while the attempt goes on (a load, a wait for a process, the run), so it
    // only runs out when this process is gone.
    const renewal = setInterval(() => {
      webhooksStore.renewLease(attemptWrites, delivery.id, claim, now() + leaseMs).catch((error: unknown) => log.warn({ err: error, deliveryId: delivery.id }, "renewing a delivery's lease failed"));
    }, Math.max(1000, Math.floor(leaseMs / 3)));
    renewal.unref();
    try {
      await attemptUnderLease(delivery, claim);
    } finally {
      clearInterval(renewal);
    }
  }

  async function attemptUnderLease(delivery: DeliveryRow, claim: string): Promise<void> {
    let attempts = delivery.attempts + 1;
    let spared = delivery.spared_runs;
    /** Not an attempt of its own (the server busy, the run stopped for another's): tried again after UNCOUNTED_RETRY_MS. */
    let uncounted = false;
    const runIds = JSON.parse(delivery.run_ids) as string[];
    let status: DeliveryStatus;
    let error: string | null = null;
    let verificationFailed: boolean | undefined;
    try {
      const stored = JSON.parse(
        open(keyring, { keyId: delivery.request_key_id, sealed: delivery.request_sealed }, aad.webhookDelivery(delivery.workspace_id, delivery.worker_id, delivery.id)).toString("utf8"),
      ) as StoredRequest;
      const rawBody = Buffer.from(stored.bodyBase64, "base64").toString("utf8");
      const event = { deliveryId: delivery.id, body: parsedBody(rawBody), rawBody, headers: stored.headers, method: stored.method };
      const outcome = await options.runs.attempt(callerFor(delivery.workspace_id, "webhook delivery"), { workerId: delivery.worker_id, capabilityKey: delivery.webhook_key, args: [event], deliveryId: delivery.id });
      runIds.push(outcome.runId);
      if (outcome.ok) {
        status = "succeeded";
        verificationFailed = false;
      } else if (outcome.errorName === "WebhookVerificationError") {
        // Never retried: the same request would fail the same check.
        status = "verification_failed";
        error = outcome.message;
        verificationFailed = true;
      } else if (outcome.collateral && spared < MAX_SPARED_RUNS) {
        // Its process was stopped at another run's time limit (runs share processes): nothing this
        // delivery's run did. Tried again soon and not counted, so a delivery that never ends
        // cannot use up the attempts of those that ran beside it; a few times, then they count.
        attempts = delivery.attempts;
        spared += 1;
        uncounted = true;
        status = "queued";
        error = outcome.message;
      } else {
        status = attempts <= limits.retryDelaysMs.length ? "queued" : "failed";
        error = outcome.message;
      }
    } catch (failure) {
      // Before a run could start: the worker gone, no live deployment, no such capability any more,
      // a worker that fails to load. Retried like a failed run (a deploy may fix it).
      error = failure instanceof AppError ? failure.message : (failure as Error).message;
      if (failure instanceof AppError && failure.status === 503) {
        // The server was busy (its process cap, its database): no attempt was made, none is counted.
        attempts = delivery.attempts;
        uncounted = true;
        status = "queued";
      } else {
        status = attempts <= limits.retryDelaysMs.length ? "queued" : "failed";
      }
      if (!(failure instanceof AppError)) log.error({ err: failure, deliveryId: delivery.id }, "a webhook delivery could not run");
    }
    const at = now();
    const retryAt = status !== "queued" ? at : uncounted ? at + UNCOUNTED_RETRY_MS : at + limits.retryDelaysMs[attempts - 1]!;
    const finished = status === "queued" ? null : at;
    const kept = await webhooksStore.finishAttempt(attemptWrites, delivery.id, claim, {
      status,
      attempts,
      spared_runs: spared,
      run_ids: JSON.stringify(runIds),
      next_attempt_at: retryAt,
      finished_at: finished,
      last_error: error,
    });
    if (kept && verificationFailed !== undefined) {
      const webhook = await webhookRow(delivery.worker_id, delivery.webhook_key);
      // A success with no failures to reset writes nothing.
      if (webhook && (verificationFailed ? webhook.verification_enabled === 1 : webhook.verification_failures > 0)) {
        await writeWebhooks(delivery.worker_id, (trx) => webhooksStore.recordVerification(trx, delivery.worker_id, delivery.webhook_key, verificationFailed, BLOCK_AFTER, at));
      }
    }
    if (status === "queued") schedule(retryAt - at);
  }

  function schedule(inMs: number): void {
    if (stopped) return;
    const wait = Math.max(0, Math.min(inMs, limits.pollMs));
    if (timer && wait >= limits.pollMs) return;
    clearTimeout(timer);
    timer = setTimeout(() => {
      timer = undefined;
      void look().finally(() => schedule(limits.pollMs));
    }, wait);
    timer.unref();
  }

  async function listOf(caller: Caller, workerId: string): Promise<WebhookView[]> {
    const worker = await options.workers.get(caller, workerId);
    const rows = await webhooksStore.listWebhooks(db, worker.id);
    const keys = await liveWebhookKeys(worker);
    const last = await webhooksStore.lastDeliveries(db, worker.id);
    return rows
      .filter((row) => keys.has(row.key))
      .map((row) => {
        const delivery = last.get(row.key);
        return {
          key: row.key,
          url: urlOf(row),
          status: row.blocked_at !== null ? "blocked" : row.verification_enabled ? "active" : "verification off",
          verificationFailures: row.verification_failures,
          lastDelivery: delivery ? { status: delivery.status, receivedAt: new Date(delivery.received_at).toISOString() } : null,
        } satisfies WebhookView;
      });
    }

  return {
    async deployed(worker, capabilities) {
      const at = now();
      const lines: string[] = [];
      const rows: WebhookRow[] = [];
      for (const capability of capabilities) {
        if (capability._tag !== "webhook") continue;
        const secret = newSecret(worker, capability.key);
        const row: WebhookRow = {
          worker_id: worker.id,
          key: capability.key,
          workspace_id: worker.workspace_id,
          secret_hash: secret.hash,
          secret_key_id: secret.keyId,
          secret_sealed: secret.sealed,
          verification_enabled: 1,
          verification_failures: 0,
          blocked_at: null,
          created_at: at,
          updated_at: at,
        };
        rows.push(row);
      }
      await writeWebhooks(worker.id, async (trx) => {
        await webhooksStore.resetVerification(trx, worker.id, at);
        for (const row of rows) if (await webhooksStore.insertWebhookIfAbsent(trx, row)) lines.push(`Webhook ${row.key}: ${urlOf(row)}`);
      });
      return lines;
    },

    list: listOf,

    async deliveries(caller, workerId, key) {
      const { worker } = await webhookOf(caller, workerId, key);
      const rows = await webhooksStore.listDeliveries(db, worker.id, key, 100);
      return rows.map((row) => ({
        deliveryId: row.id,
        status: row.status,
        attempts: row.attempts,
        runIds: JSON.parse(row.run_ids) as string[],
        receivedAt: new Date(row.received_at).toISOString(),
        finishedAt: row.finished_at === null ? null : new Date(row.finished_at).toISOString(),
        error: row.last_error,
      }));
    },

    async redeliver(caller, workerId, deliveryId) {
      const worker = await options.workers.get(caller, workerId);
      const delivery = await webhooksStore.findDelivery(db, worker.id, deliveryId);
      if (!delivery) {
        throw new AppError("delivery_not_found", `No delivery ${JSON.stringify(deliveryId)} for this worker.`, {
          hint: "Run `ntn workers webhooks deliveries KEY` to see a webhook's deliveries.",
        });
      }
      if (!(await webhooksStore.requeueDelivery(db, worker.id, deliveryId, now()))) {
        throw new AppError("delivery_in_progress", `Delivery ${deliveryId} is ${delivery.status} already.`, { hint: "Wait for it to finish, then redeliver." });
      }
      void look();
    },

    async rotate(caller, workerId, key) {
      const { worker, row } = await webhookOf(caller, workerId, key);
      const secret = newSecret(worker, key);
      await writeWebhooks(worker.id, (trx) => webhooksStore.replaceWebhookSecret(trx, worker.id, key, secret, now()));
      return urlOf({ ...row, secret_hash: secret.hash, secret_key_id: secret.keyId, secret_sealed: secret.sealed });
    },

    async unblock(caller, workerId, key) {
      const { worker } = await webhookOf(caller, workerId, key);
      await writeWebhooks(worker.id, (trx) => webhooksStore.setWebhookState(trx, worker.id, key, { blocked_at: null, verification_failures: 0 }, now()));
    },

    async setVerification(caller, workerId, key, enabled) {
      const { worker } = await webhookOf(caller, workerId, key);
      await writeWebhooks(worker.id, (trx) =>
        webhooksStore.setWebhookState(trx, worker.id, key, { verification_enabled: enabled ? 1 : 0, blocked_at: null, verification_failures: 0 }, now()),
      );
    },

    async receive(path, request): Promise<IngressAnswer> {
      const startedAt = now();
      const row = await webhookRow(path.workerId, path.key);
      // One answer whatever part of the URL is wrong: it tells a guesser nothing.
      if (!row || row.workspace_id !== path.workspaceId || !safeEqual(sha256Hex(path.secretId), row.secret_hash)) return NOT_FOUND;
      const worker = await options.workers.get(callerFor(row.workspace_id, "webhook"), row.worker_id).catch((error: unknown) => {
        if (error instanceof AppError && error.status === 404) return undefined;
        throw error;
      });
      const capability = worker ? await liveCapability(worker, row.key) : undefined;
      if (!worker || !capability) return NOT_FOUND;
      const withVerify = capability.config?.hasVerify === true && row.verification_enabled === 1;
      if (request.method !== "POST" && !(withVerify && (request.method === "GET" || request.method === "HEAD"))) {
        return { status: 405, body: { error: "Method not allowed" }, headers: { allow: withVerify ? "GET, HEAD, POST" : "POST" } };
      }
      if (row.blocked_at !== null) {
        return { status: 403, body: { error: `This webhook is blocked after ${BLOCK_AFTER} failed verifications in a row.` } };
      }
      const waitWorker = perWorker.take(worker.id);
      const waitWorkspace = waitWorker === 0 ? perWorkspace.take(worker.workspace_id) : 0;
      if (waitWorker > 0 || waitWorkspace > 0) {
        if (waitWorkspace > 0) perWorker.giveBack(worker.id);
        return { status: 429, body: { error: "Rate limit exceeded" }, headers: { "retry-after": String(Math.max(waitWorker, waitWorkspace)) } };
      }
      if (await waiting.full(worker.workspace_id, limits.maxQueued)) {
        return { status: 503, body: { error: "Too many deliveries are waiting; try again later." }, headers: { "retry-after": "30" } };
      }
      let accepted: IngressAnswer | undefined;
      if (withVerify) {
        const answer = await verified(worker, row.key, request, startedAt);
        if (!("accepted" in answer)) return answer;
        // A probe (GET, HEAD) is answered, never delivered.
        if (request.method !== "POST") return answer.accepted;
        accepted = answer.accepted;
      }
      const deliveryId = newId();
      const stored: StoredRequest = { method: request.method, headers: lowerCased(request.headers), bodyBase64: request.body.toString("base64") };
      const sealed = seal(keyring, JSON.stringify(stored), aad.webhookDelivery(row.workspace_id, row.worker_id, deliveryId));
      const delivery: webhooksStore.NewDelivery = {
        id: deliveryId,
        workspace_id: row.workspace_id,
        worker_id: row.worker_id,
        webhook_key: row.key,
        request_key_id: sealed.keyId,
        request_sealed: sealed.sealed,
        received_at: now(),
      };
      if (!stopped && freeSlots() > 0) {
        // A free slot: the delivery is stored claimed by this process and runs once answered.
        const storing = webhooksStore.insertDelivery(writes, delivery, { claim: newClaim(), leaseUntil: now() + leaseMs });
        accepting.add(storing);
        try {
          startAttempt(await storing, true);
        } finally {
          accepting.delete(storing);
        }
      } else {
        await webhooksStore.insertDelivery(writes, delivery);
        mayBeDue = true;
        setImmediate(() => void look());
      }
      waiting.added(row.workspace_id);
      return accepted ?? { status: 202, body: { deliveryId } };
    },

    start() {
      stopped = false;
      schedule(0);
    },

    async stop() {
      stopped = true;
      clearTimeout(timer);
      // A claim in flight finishes first, and so do deliveries being stored as claimed here: the
      // attempts they start are waited for like the others.
      await Promise.allSettled([looking, ...accepting]);
      await Promise.allSettled([...running.values()]);
    },
  };
}

/** The SDK's `body`: the JSON object sent, else `{}`. */
function parsedBody(text: string): Record<string, unknown> {
  try {
    const value = JSON.parse(text) as unknown;
    return value !== null && typeof value === "object" && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

function lowerCased(headers: InboundRequest["headers"]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    out[name.toLowerCase()] = Array.isArray(value) ? value.join(", ") : value;
  }
  return out;
}

/**
 * Counts of deliveries waiting to run, per workspace and in all, for the queue's bounds. Read from
 * the database at most once a second each (every process of a cluster adds to them) and counted up
 * here in between, so a burst of deliveries costs no query per request.
 */
class WaitingCounts {
  private readonly counts = new Map<string, { n: number; readAt: number; reading?: Promise<number> }>();

  constructor(
    private readonly db: Kysely<Database>,
    private readonly now: () => number,
    private readonly maxAgeMs = 1000,
  ) {}

  async full(workspaceId: string, max: { perWorkspace: number; total: number }): Promise<boolean> {
    const [inWorkspace, total] = await Promise.all([this.count(workspaceId), this.count(TOTAL)]);
    return inWorkspace >= max.perWorkspace || total >= max.total;
  }

  added(workspaceId: string): void {
    for (const key of [workspaceId, TOTAL]) {
      const entry = this.counts.get(key);
      if (entry) entry.n += 1;
    }
  }

  private async count(key: string): Promise<number> {
    const entry = this.counts.get(key);
    if (entry && this.now() - entry.readAt < this.maxAgeMs) return entry.n;
    if (entry?.reading) return entry.reading;
    const reading = webhooksStore.countWaiting(this.db, key === TOTAL ? undefined : key).then(
      (n) => {
        this.counts.set(key, { n, readAt: this.now() });
        return n;
      },
      (error: unknown) => {
        this.counts.delete(key);
        throw error;
      },
    );
    this.counts.set(key, { n: entry?.n ?? 0, readAt: entry?.readAt ?? 0, reading });
    return reading;
  }
}

/** The key of the count of all workspaces' deliveries (no workspace id is empty). */
const TOTAL = "";
