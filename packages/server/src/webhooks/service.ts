import os from "node:os";
import type { Kysely } from "kysely";
import type { Caller } from "../auth/tokens.js";
import type { BuildService } from "../builder/service.js";
import type { CapabilitySummary } from "../builder/manifest.js";
import { AppError } from "../errors.js";
import { newId, randomToken, safeEqual, sha256Hex } from "../ids.js";
import type { Logger } from "../log.js";
import type { RunService } from "../runs/service.js";
import type { Database, DeliveryRow, DeliveryStatus, WebhookRow, WorkerRow } from "../store/schema.js";
import * as webhooksStore from "../store/webhooks.js";
import * as workersStore from "../store/workers.js";
import type { Keyring } from "../vault/keyring.js";
import { aad, open, seal } from "../vault/seal.js";
import type { WorkerService } from "../workers/service.js";

/** What a webhook capability's URL ends with, after the public URL. */
export const WEBHOOK_PATH = "/webhooks/worker";

/** Consecutive verification failures that block a webhook (Notion's figure). */
export const BLOCK_AFTER = 5;

export interface WebhookLimits {
  /** The largest body accepted. */
  maxBodyBytes: number;
  /** Deliveries waiting to run (all webhooks) past which new ones get 503. */
  maxQueued: number;
  /** Waits before the retries of a failed attempt: one retry per entry (Notion: 3). */
  retryDelaysMs: number[];
  /** Attempts run at once by this process. */
  concurrency: number;
  /** How often this process looks for due deliveries (others' and retries) besides being woken. */
  pollMs: number;
}

export const DEFAULT_WEBHOOK_LIMITS: WebhookLimits = {
  maxBodyBytes: 1024 * 1024,
  maxQueued: 10_000,
  retryDelaysMs: [10_000, 60_000, 300_000],
  concurrency: 4,
  pollMs: 1000,
};

/** A request as the ingress received it. */
export interface InboundRequest {
  method: string;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** What the ingress answers: a status, a JSON body, and headers. */
export interface IngressAnswer {
  status: number;
  body: Record<string, unknown>;
  headers?: Record<string, string>;
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
  body: string;
}

const NOT_FOUND: IngressAnswer = { status: 404, body: { error: "Not found" } };

export function createWebhookService(options: {
  db: Kysely<Database>;
  keyring: Keyring;
  workers: WorkerService;
  builder: Pick<BuildService, "liveDeployment">;
  runs: Pick<RunService, "attempt">;
  publicUrl(): string;
  log: Logger;
  runTimeoutMs: number;
  limits?: Partial<WebhookLimits>;
  now?: () => number;
}): WebhookService {
  const { db, keyring, log } = options;
  const now = options.now ?? Date.now;
  const limits = { ...DEFAULT_WEBHOOK_LIMITS, ...options.limits };
  // Who holds a delivery's lease: this process, told apart from others on the same database.
  const owner = `${os.hostname()}:${process.pid}:${randomToken(6)}`;
  // A lease outlives the longest attempt (its run's time limit), with room to record it.
  const leaseMs = options.runTimeoutMs + 30_000;

  const urlOf = (row: WebhookRow) => {
    const secretId = open(keyring, { keyId: row.secret_key_id, sealed: row.secret_sealed }, aad.webhookSecret(row.workspace_id, row.worker_id, row.key)).toString("utf8");
    return `${options.publicUrl()}${WEBHOOK_PATH}/${row.workspace_id}/${row.worker_id}/${secretId}/${encodeURIComponent(row.key)}`;
  };

  // The dispatcher: attempts under way, and whether a look for due deliveries is wanted.
  const running = new Set<Promise<void>>();
  let timer: NodeJS.Timeout | undefined;
  let stopped = true;
  let looking = false;
  let lookAgain = false;

  async function look(): Promise<void> {
    if (stopped) return;
    if (looking) {
      lookAgain = true;
      return;
    }
    looking = true;
    try {
      do {
        lookAgain = false;
        const free = limits.concurrency - running.size;
        if (free <= 0) break;
        const at = now();
        const claimed = await webhooksStore.claimDue(db, owner, at, at + leaseMs, free);
        for (const delivery of claimed) {
          const attempt = runAttempt(delivery).catch((error: unknown) => log.error({ err: error, deliveryId: delivery.id }, "a webhook delivery's attempt failed"));
          running.add(attempt);
          void attempt.finally(() => {
            running.delete(attempt);
            void look();
          });
        }
        if (claimed.length === free) lookAgain = true;
      } while (lookAgain && !stopped);
    } catch (error) {
      log.warn({ err: error }, "looking for webhook deliveries failed");
    } finally {
      looking = false;
    }
  }

  /** One attempt at a claimed delivery: a run of the capability, and what it means for the delivery. */
  async function runAttempt(delivery: DeliveryRow): Promise<void> {
    const attempts = delivery.attempts + 1;
    const runIds = JSON.parse(delivery.run_ids) as string[];
    let status: DeliveryStatus;
    let error: string | null = null;
    let verificationFailed: boolean | undefined;
    try {
      const stored = JSON.parse(
        open(keyring, { keyId: delivery.request_key_id, sealed: delivery.request_sealed }, aad.webhookDelivery(delivery.workspace_id, delivery.worker_id, delivery.id)).toString("utf8"),
      ) as StoredRequest;
      const event = { deliveryId: delivery.id, body: parsedBody(stored.body), rawBody: stored.body, headers: stored.headers, method: stored.method };
      const caller: Caller = { tokenId: "", tokenName: "webhook delivery", workspaceId: delivery.workspace_id, workspaceName: "", role: "member" };
      const outcome = await options.runs.attempt(caller, { workerId: delivery.worker_id, capabilityKey: delivery.webhook_key, args: [event] });
      runIds.push(outcome.runId);
      if (outcome.ok) {
        status = "succeeded";
        verificationFailed = false;
      } else if (outcome.errorName === "WebhookVerificationError") {
        // Never retried: the same request would fail the same check.
        status = "verification_failed";
        error = outcome.message;
        verificationFailed = true;
      } else {
        status = attempts <= limits.retryDelaysMs.length ? "queued" : "failed";
        error = outcome.message;
      }
    } catch (failure) {
      // Before a run could start: the worker gone, no live deployment, no such capability any more,
      // a worker that fails to load. Retried like a failed run (a deploy may fix it).
      error = failure instanceof AppError ? failure.message : (failure as Error).message;
      status = attempts <= limits.retryDelaysMs.length ? "queued" : "failed";
      if (!(failure instanceof AppError)) log.error({ err: failure, deliveryId: delivery.id }, "a webhook delivery could not run");
    }
    const at = now();
    const retryAt = status === "queued" ? at + limits.retryDelaysMs[attempts - 1]! : at;
    const finished = status === "queued" ? null : at;
    const kept = await webhooksStore.finishAttempt(db, delivery.id, owner, {
      status,
      attempts,
      run_ids: JSON.stringify(runIds),
      next_attempt_at: retryAt,
      finished_at: finished,
      last_error: error,
    });
    if (kept && verificationFailed !== undefined) {
      const webhook = await webhooksStore.findWebhook(db, delivery.worker_id, delivery.webhook_key);
      if (webhook && (webhook.verification_enabled || !verificationFailed)) {
        await webhooksStore.recordVerification(db, delivery.worker_id, delivery.webhook_key, verificationFailed, BLOCK_AFTER, at);
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

  return {
    async deployed(worker, capabilities) {
      const at = now();
      await webhooksStore.resetVerification(db, worker.id, at);
      const lines: string[] = [];
      for (const capability of capabilities) {
        if (capability._tag !== "webhook") continue;
        const secretId = randomToken(24);
        const sealed = seal(keyring, secretId, aad.webhookSecret(worker.workspace_id, worker.id, capability.key));
        const row: WebhookRow = {
          worker_id: worker.id,
          key: capability.key,
          workspace_id: worker.workspace_id,
          secret_hash: sha256Hex(secretId),
          secret_key_id: sealed.keyId,
          secret_sealed: sealed.sealed,
          verification_enabled: 1,
          verification_failures: 0,
          blocked_at: null,
          created_at: at,
          updated_at: at,
        };
        if (await webhooksStore.insertWebhookIfAbsent(db, row)) lines.push(`Webhook ${capability.key}: ${urlOf(row)}`);
      }
      return lines;
    },

    async list(caller, workerId) {
      const worker = await options.workers.get(caller, workerId);
      const rows = await webhooksStore.listWebhooks(db, worker.id);
      const live = await options.builder.liveDeployment(worker);
      const keys = new Set(((JSON.parse(live?.capabilities ?? "[]") as CapabilitySummary[]).filter((c) => c._tag === "webhook")).map((c) => c.key));
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
    },

    async receive(path, request) {
      const row = await webhooksStore.findWebhook(db, path.workerId, path.key);
      // One answer whatever part of the URL is wrong: it tells a guesser nothing.
      if (!row || row.workspace_id !== path.workspaceId || !safeEqual(sha256Hex(path.secretId), row.secret_hash)) return NOT_FOUND;
      const worker = await workersStore.findWorker(db, row.workspace_id, row.worker_id);
      const live = worker ? await options.builder.liveDeployment(worker) : undefined;
      const capabilities = JSON.parse(live?.capabilities ?? "[]") as CapabilitySummary[];
      if (!worker || !capabilities.some((c) => c._tag === "webhook" && c.key === row.key)) return NOT_FOUND;
      if (request.method !== "POST") return { status: 405, body: { error: "Method not allowed" }, headers: { allow: "POST" } };
      if (row.blocked_at !== null) {
        return { status: 403, body: { error: `This webhook is blocked after ${BLOCK_AFTER} failed verifications in a row.` } };
      }
      if ((await webhooksStore.countWaiting(db)) >= limits.maxQueued) {
        return { status: 503, body: { error: "Too many deliveries are waiting; try again later." }, headers: { "retry-after": "30" } };
      }
      const deliveryId = newId();
      const stored: StoredRequest = { method: request.method, headers: lowerCased(request.headers), body: request.body.toString("utf8") };
      const sealed = seal(keyring, JSON.stringify(stored), aad.webhookDelivery(row.workspace_id, row.worker_id, deliveryId));
      const at = now();
      await webhooksStore.insertDelivery(db, {
        id: deliveryId,
        workspace_id: row.workspace_id,
        worker_id: row.worker_id,
        webhook_key: row.key,
        status: "queued",
        attempts: 0,
        run_ids: "[]",
        request_key_id: sealed.keyId,
        request_sealed: sealed.sealed,
        received_at: at,
        next_attempt_at: at,
        lease_owner: null,
        lease_until: null,
        finished_at: null,
        last_error: null,
      });
      void look();
      return { status: 202, body: { deliveryId } };
    },

    start() {
      stopped = false;
      schedule(0);
    },

    async stop() {
      stopped = true;
      clearTimeout(timer);
      await Promise.allSettled([...running]);
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
