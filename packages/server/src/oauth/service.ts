import type { Kysely } from "kysely";
import type { Caller } from "../auth/tokens.js";
import type { CapabilitySummary } from "../builder/manifest.js";
import type { BuildService } from "../builder/service.js";
import { AppError, isAppError, workerNotFound } from "../errors.js";
import type { Executor } from "../executor/pool.js";
import type { EnvPatch } from "../executor/protocol.js";
import type { Logger } from "../log.js";
import { NO_RUN_ENV, type Renewal, type RunEnvSource } from "../runs/service.js";
import type { EnvEntry, EnvNotice } from "../secrets/service.js";
import type { Database, WorkerRow } from "../store/schema.js";
import * as workersStore from "../store/workers.js";
import type { ChangeFeed } from "../store/changes.js";
import type { Keyring } from "../vault/keyring.js";
import type { WorkerService } from "../workers/service.js";
import { clientSecretsHint, createClientSecretProbe } from "./client-secrets.js";
import { Connections, stateOf, statusOf, type ConnectionState, type ConnectionStatus, type RefreshTiming } from "./connections.js";
import { ClientRejectedError, notConnected, oauthCapabilityNotFound } from "./errors.js";
import { exchangeCode } from "./exchange.js";
import { renewDuringRunAt, userReadFreshness, type Freshness } from "./expiry.js";
import { completeFlow, startFlow, takeFlow, waitForFlow } from "./flow.js";
import { PROVIDER_TIMEOUT_MS } from "./http.js";
import { leaseTimingFor } from "./lease.js";
import type { ProviderQuirks } from "./providers/load.js";
import { notRevoked, revokeAtProvider } from "./revoke.js";
import { createLiveSettings, envKeyFor, type OAuthSettings, type SettingsContext } from "./settings.js";

export type { ConnectionState, ConnectionStatus } from "./connections.js";

/** What the callback page tells the person. */
export interface CallbackOutcome {
  ok: boolean;
  title: string;
  message: string;
  hint?: string | undefined;
}

/** How a user's read of tokens (GetOauthToken, PullEnv) wants them: `refresh` forces one. */
export interface TokenRead {
  refresh?: boolean;
}

/** A capability as ListCapabilities shows it: an OAuth one with its connection's state. */
export type AnnotatedCapability = CapabilitySummary & { connection?: ConnectionState };

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/**
 * OAuth as the API, the callback page and runs see it: the facade over flows (flow.ts, exchange.ts),
 * tokens (connections.ts), status and revocation (revoke.ts). Each method is one use case.
 */
export function createOAuthService(options: {
  db: Kysely<Database>;
  /** Connection rows are kept in memory for token reads; every process hears of their writes. */
  changes: ChangeFeed;
  keyring: Keyring;
  log: Logger;
  workers: WorkerService;
  builder: BuildService;
  executor: Executor;
  publicUrl: () => string;
  allowInsecure: boolean;
  /** The provider catalog, read on first use (an operator's extra file is checked at start). */
  catalog: () => Promise<ProviderQuirks[]>;
  providerTimeoutMs?: number;
  /** The server's own fetch, under the egress policy. */
  fetch?: typeof fetch;
  /** The lease's clocks default to those of the provider timeout (lease.ts leaseTimingFor). */
  timing?: Partial<RefreshTiming>;
  now?: () => number;
}) {
  const { db, keyring, log, workers, builder, executor } = options;
  const now = options.now ?? Date.now;
  const providerTimeoutMs = options.providerTimeoutMs ?? PROVIDER_TIMEOUT_MS;

  const context = async (): Promise<SettingsContext> => ({
    publicUrl: options.publicUrl(),
    allowInsecure: options.allowInsecure,
    catalog: await options.catalog(),
    providerTimeoutMs,
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
  const { settingsFor, allSettings } = createLiveSettings({ builder, context });
  const clientSecretNames = createClientSecretProbe({ builder, executor });

  const connections = new Connections({
    db,
    changes: options.changes,
    keyring,
    log,
    now,
    onRefreshed: (workerId, envKey, accessToken) => executor.pushEnv(workerId, { [envKey]: accessToken }),
    clientSecretNames: (worker) => clientSecretNames(worker),
    timing: { ...leaseTimingFor(providerTimeoutMs), ...options.timing },
  });

  async function requireClient(worker: WorkerRow, settings: OAuthSettings): Promise<void> {
    const missing = [!settings.clientId && "client id", !settings.clientSecret && "client secret"].filter(Boolean);
    if (missing.length === 0) return;
    const names = await clientSecretNames(worker, settings.key).catch(() => []);
    throw new AppError("oauth_not_configured", `${JSON.stringify(settings.key)} has no ${missing.join(" and no ")} yet.`, {
      hint: names.length > 0 ? `Set them: ntn workers env set ${names.map((n) => `${n}=...`).join(" ")}` : clientSecretsHint([]),
    });
  }

  /** Valid tokens for every OAuth capability; a capability that has none says why. */
  async function collectTokens(worker: WorkerRow, workerIsFresh = false, wanted: Freshness = {}) {
    const { settings, broken } = await allSettings(worker, workerIsFresh);
    const tokens: { settings: OAuthSettings; accessToken: string; expiresAt: number | null }[] = [];
    const failures: { key: string; envKey: string; error: AppError }[] = broken.map((b) => ({ key: b.key, envKey: envKeyFor(b.name), error: b.error }));
    for (const s of settings) {
      try {
        const token = await connections.validToken(worker, s, wanted);
        tokens.push({ settings: s, ...token });
      } catch (error) {
        if (!isAppError(error)) throw error;
        failures.push({ key: s.key, envKey: s.envKey, error });
      }
    }
    return { tokens, failures };
  }

  const runEnv: RunEnvSource = async (worker, capabilities) => {
    // Most tools' workers have no OAuth capability: nothing to look up.
    if (!capabilities.some((c) => c._tag === "oauth")) return NO_RUN_ENV;
    const { tokens, failures } = await collectTokens(worker, true);
    const env: EnvPatch = {};
    const hints = new Map<string, string>();
    const renewals: Renewal[] = [];
    for (const token of tokens) {
      env[token.settings.envKey] = token.accessToken;
      if (token.expiresAt !== null) {
        // A run that outlasts the token gets a fresh one pushed in before it expires.
        renewals.push({
          at: renewDuringRunAt(token.expiresAt, now()),
          renew: async () => {
            // Within the margin by now, so this refreshes, unless someone (maybe another server
            // process) just did; either way the run's process gets the current token.
            const next = await connections.validToken(worker, token.settings);
            executor.pushEnv(worker.id, { [token.settings.envKey]: next.accessToken });
            return next.expiresAt === null ? null : renewDuringRunAt(next.expiresAt, now());
          },
        });
      }
    }
    for (const failure of failures) {
      env[failure.envKey] = null;
      hints.set(failure.envKey, `${failure.error.message} ${failure.error.hint ?? ""}`.trim());
    }
    return { env, hints, renewals };
  };

  return {
    connections,
    runEnv,
    settingsFor,

    async start(caller: Caller, workerId: string, key: string) {
      const worker = await workers.get(caller, workerId);
      const settings = await settingsFor(worker, key, true);
      await requireClient(worker, settings);
      return startFlow(db, keyring, worker, settings, now());
    },

    /** The provider's redirect to the callback page (settings.ts OAUTH_CALLBACK_PATH): what the page tells the person. */
    async callback(query: URLSearchParams): Promise<CallbackOutcome> {
      let flow;
      try {
        flow = await takeFlow(db, query.get("state"), now());
      } catch (error) {
        if (!isAppError(error)) throw error;
        return { ok: false, title: "Authorization link not valid", message: error.message, hint: error.hint };
      }
      const fail = async (error: AppError): Promise<CallbackOutcome> => {
        await completeFlow(db, flow, { status: "failed", error: error.message, hint: error.hint ?? null }, now());
        return { ok: false, title: "Connection failed", message: error.message, hint: error.hint };
      };
      // The flow names its worker; a worker deleted meanwhile answers worker_not_found.
      const worker = await workersStore.findWorker(db, flow.workspace_id, flow.worker_id);
      if (!worker) return fail(workerNotFound(flow.worker_id));
      try {
        const settings = await settingsFor(worker, flow.capability_key);
        const answer = await exchangeCode(keyring, flow, settings, query);
        await connections.store(worker, settings, answer);
        await completeFlow(db, flow, { status: "connected" }, now());
        log.info({ workerId: worker.id, capability: settings.key }, "oauth connection stored");
        return {
          ok: true,
          title: "Connected",
          message: `${settings.key} (${settings.name}) is connected for worker ${worker.name}. You can close this window and return to the terminal.`,
        };
      } catch (error) {
        // A client the provider refused: name the secrets to check, as everywhere else.
        if (error instanceof ClientRejectedError) {
          const names = await clientSecretNames(worker, flow.capability_key).catch(() => []);
          return fail(new AppError(error.code, error.message, { hint: clientSecretsHint(names), ...(error.details ? { details: error.details } : {}) }));
        }
        if (isAppError(error)) return fail(error);
        log.error({ err: error, flowId: flow.id }, "oauth callback failed");
        return fail(new AppError("internal", "The connection could not be stored because of an internal error.", { hint: "The server log has the details." }));
      }
    },

    /** GetOauthFlow: long-polls a flow of the caller's worker until it ends or `waitMs` passes. */
    async flowStatus(caller: Caller, workerId: string, state: string, waitMs = 0) {
      const worker = await workers.get(caller, workerId);
      return waitForFlow(db, worker.id, state, waitMs, now);
    },

    async token(caller: Caller, workerId: string, key: string, read: TokenRead = {}) {
      const worker = await workers.get(caller, workerId);
      const token = await connections.validToken(worker, await settingsFor(worker, key, true), userReadFreshness(read, now()));
      return { accessToken: token.accessToken, expiresAt: iso(token.expiresAt) };
    },

    async status(caller: Caller, workerId: string, key?: string): Promise<ConnectionStatus[]> {
      const worker = await workers.get(caller, workerId);
      const { settings, broken } = await allSettings(worker);
      const rows = await connections.byKey(worker);
      const all = [
        ...settings.map((s) => statusOf(s, rows.get(s.key))),
        ...broken.map((b) => ({ ...statusOf({ key: b.key, name: b.name, envKey: envKeyFor(b.name) }, rows.get(b.key)), lastError: b.error.message })),
      ].sort((a, b) => (a.key < b.key ? -1 : 1));
      if (key === undefined) return all;
      const one = all.filter((s) => s.key === key);
      if (one.length === 0) throw oauthCapabilityNotFound(key, { among: "connections" });
      return one;
    },

    /** RFC 7009 revocation where the provider has an endpoint (revoke.ts); the stored tokens are deleted either way. */
    async revoke(caller: Caller, workerId: string, key: string) {
      const worker = await workers.get(caller, workerId);
      const row = await connections.find(worker, key);
      if (!row) throw notConnected(key, "Nothing to revoke.");
      const outcome = await settingsFor(worker, key).then(
        (settings) => revokeAtProvider(settings, () => connections.open(row)),
        (error: unknown) => notRevoked(error),
      );
      await connections.delete(worker, key);
      executor.pushEnv(worker.id, { [envKeyFor((await settingsFor(worker, key).catch(() => undefined))?.name ?? key)]: null });
      return { revokedAtProvider: outcome.revokedAtProvider, deleted: true, ...(outcome.message ? { message: outcome.message } : {}) };
    },

    /** PullEnv's runtime part: a fresh token per connected capability, notices for the others. */
    async pullEnv(worker: WorkerRow, read: TokenRead = {}): Promise<{ env: EnvEntry[]; notices: EnvNotice[] }> {
      // The worker row was read in this same request.
      const { tokens, failures } = await collectTokens(worker, true, userReadFreshness(read, now()));
      const unconnected = failures.filter((f) => f.error.code === "oauth_not_connected");
      return {
        env: tokens.map((t) => ({ key: t.settings.envKey, value: t.accessToken, expiresAt: iso(t.expiresAt) })),
        notices: failures
          .filter((f) => f.error.code !== "oauth_not_connected")
          .map((f) => ({ key: f.envKey, message: `${f.error.message} ${f.error.hint ?? ""}`.trim() }))
          .concat(unconnected.map((f) => ({ key: f.envKey, message: `${f.key} is not connected yet; run \`ntn workers oauth start ${f.key}\`.` }))),
      };
    },

    /** ListCapabilities with each OAuth capability's connection state beside it. */
    async annotate(caller: Caller, workerId: string, capabilities: CapabilitySummary[]): Promise<AnnotatedCapability[]> {
      if (!capabilities.some((c) => c._tag === "oauth")) return capabilities;
      const worker = await workers.get(caller, workerId);
      const rows = await connections.byKey(worker);
      return capabilities.map((c) => (c._tag !== "oauth" ? c : { ...c, connection: stateOf(rows.get(c.key)) }));
    },
  };
}

export type OAuthService = ReturnType<typeof createOAuthService>;
