import type { Kysely } from "kysely";
import * as oauth from "oauth4webapi";
import type { CapabilityView, ConnectionStatusView, EnvEntry, EnvNotice } from "../api/contract.js";
import type { Caller } from "../auth/tokens.js";
import type { CapabilitySummary } from "../builder/manifest.js";
import type { BuildService } from "../builder/service.js";
import { AppError, isAppError, workerNotFound } from "../errors.js";
import type { Executor } from "../executor/pool.js";
import type { EnvPatch } from "../executor/protocol.js";
import { sha256Hex } from "../ids.js";
import type { Logger } from "../log.js";
import type { Renewal, RunEnvSource } from "../runs/service.js";
import * as oauthStore from "../store/oauth.js";
import * as workersStore from "../store/workers.js";
import type { Database, OauthConnectionRow, WorkerRow } from "../store/schema.js";
import type { Keyring } from "../vault/keyring.js";
import type { WorkerService } from "../workers/service.js";
import { classify } from "./classify.js";
import { clientSecretsHint, Connections, DEFAULT_REFRESH_INTERVAL_MS, refreshMargin, type RefreshTiming } from "./connections.js";
import { exchangeCode, flowExpired, startFlow, takeFlow } from "./flow.js";
import { authorizationServer, client, clientAuth, PROVIDER_TIMEOUT_MS, requestOptions } from "./http.js";
import type { ProviderQuirks } from "./providers/load.js";
import { envKeyFor, oauthCapability, resolveSettings, type OAuthSettings, type SettingsContext } from "./settings.js";

/** A connection as GetOauthStatus shows it (the contract's shape). */
export type ConnectionStatus = ConnectionStatusView;

export interface CallbackOutcome {
  ok: boolean;
  title: string;
  message: string;
  hint?: string | undefined;
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** OAuth connections as the API and the runtime see them: flows, tokens, status, revocation. */
export function createOAuthService(options: {
  db: Kysely<Database>;
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
  timing?: Partial<RefreshTiming>;
  now?: () => number;
}) {
  const { db, keyring, log, workers, builder, executor } = options;
  const now = options.now ?? Date.now;

  const context = async (): Promise<SettingsContext> => ({
    publicUrl: options.publicUrl(),
    allowInsecure: options.allowInsecure,
    catalog: await options.catalog(),
    providerTimeoutMs: options.providerTimeoutMs ?? PROVIDER_TIMEOUT_MS,
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });

  /** The env var names a bundle reads (process.env.NAME / process.env["NAME"]). */
  function referencedEnvNames(bundle: string): string[] {
    const names = new Set<string>();
    for (const match of bundle.matchAll(/process\.env(?:\.([A-Za-z_]\w*)|\[\s*["'`]([A-Za-z_]\w*)["'`]\s*\])/g)) names.add((match[1] ?? match[2])!);
    return [...names];
  }

  /**
   * Which secrets feed a worker's OAuth client ids and secrets: the bundle's env names are set to
   * marker values in a throwaway sandbox load, and the markers found in the manifest name them.
   */
  async function clientSecretNames(worker: WorkerRow, key?: string): Promise<string[]> {
    const deployment = await builder.liveDeployment(worker);
    const bundle = await builder.liveBundle(worker);
    if (!deployment || !bundle) return [];
    const candidates = referencedEnvNames(bundle);
    if (candidates.length === 0) return [];
    const target = await builder.execTarget(worker, deployment);
    const markers = Object.fromEntries(candidates.map((name) => [name, `__workyard_probe_${name}__`]));
    const manifest = (await executor.probe({ ...target, secrets: async () => ({ ...(await target.secrets()), ...markers }) })) as {
      capabilities?: { _tag: string; key: string; config?: Record<string, unknown> }[];
    };
    const found: string[] = [];
    for (const capability of manifest.capabilities ?? []) {
      if (capability._tag !== "oauth" || (key && capability.key !== key)) continue;
      for (const field of ["clientId", "clientSecret"]) {
        const value = capability.config?.[field];
        const name = typeof value === "string" ? /__workyard_probe_(\w+)__/.exec(value)?.[1] : undefined;
        if (name && !found.includes(name)) found.push(name);
      }
    }
    return found;
  }

  const connections = new Connections({
    db,
    keyring,
    log,
    now,
    onRefreshed: (workerId, envKey, accessToken) => executor.pushEnv(workerId, { [envKey]: accessToken }),
    clientSecretNames: (worker) => clientSecretNames(worker),
    ...(options.timing ? { timing: options.timing } : {}),
  });

  /** The live manifest (re-read with current secrets) as OAuth settings for one capability. */
  async function settingsFor(worker: WorkerRow, key: string, workerIsFresh = false): Promise<OAuthSettings> {
    const live = await builder.liveManifest(worker, { workerIsFresh });
    if (!live) throw new AppError("no_live_deployment", "This worker has no live deployment yet.", { hint: "Run `ntn workers deploy` first." });
    return resolveSettings(oauthCapability(live.manifest, key), await context());
  }

  /** Every OAuth capability of the live manifest, as settings (those that cannot resolve are left out with their error). */
  async function allSettings(worker: WorkerRow, workerIsFresh = false): Promise<{ settings: OAuthSettings[]; broken: { key: string; name: string; error: AppError }[] }> {
    if (!worker.live_deployment_id && workerIsFresh) return { settings: [], broken: [] };
    const live = await builder.liveManifest(worker, { workerIsFresh });
    const result = { settings: [] as OAuthSettings[], broken: [] as { key: string; name: string; error: AppError }[] };
    const ctx = await context();
    for (const capability of live?.manifest.capabilities ?? []) {
      if (capability._tag !== "oauth") continue;
      try {
        result.settings.push(resolveSettings(capability, ctx));
      } catch (error) {
        if (!isAppError(error)) throw error;
        const name = typeof capability.config?.name === "string" ? capability.config.name : capability.key;
        result.broken.push({ key: capability.key, name, error });
      }
    }
    return result;
  }

  async function requireClient(worker: WorkerRow, settings: OAuthSettings): Promise<void> {
    const missing = [!settings.clientId && "client id", !settings.clientSecret && "client secret"].filter(Boolean);
    if (missing.length === 0) return;
    const names = await clientSecretNames(worker, settings.key).catch(() => []);
    throw new AppError("oauth_not_configured", `${JSON.stringify(settings.key)} has no ${missing.join(" and no ")} yet.`, {
      hint: names.length > 0 ? `Set them: ntn workers env set ${names.map((n) => `${n}=...`).join(" ")}` : clientSecretsHint([]),
    });
  }

  function statusOf(settings: { key: string; name: string; envKey: string }, row: OauthConnectionRow | undefined): ConnectionStatus {
    return {
      key: settings.key,
      name: settings.name,
      envKey: settings.envKey,
      status: !row ? "not_connected" : row.status,
      expiresAt: iso(row?.access_expires_at ?? null),
      expirySource: row?.expiry_source ?? null,
      hasRefreshToken: row?.has_refresh_token === 1,
      connectedAt: iso(row?.connected_at ?? null),
      lastRefreshAt: iso(row?.last_refresh_at ?? null),
      nextRefreshAt: iso(row?.next_refresh_at ?? null),
      lastError: row?.last_error ?? null,
      lastErrorAt: iso(row?.last_error_at ?? null),
      defaultRefreshIntervalMs: DEFAULT_REFRESH_INTERVAL_MS,
    };
  }

  /**
   * What a user's read of tokens (GetOauthToken, PullEnv) refreshes first: tokens whose expiry is
   * unknown (the seed's promise: after a 401, pull again and get a valid one), and every token
   * when asked to. Runs keep to the plain expiry.
   */
  const readOptions = (read: TokenRead) => (read.refresh ? { refreshObtainedBefore: now(), refreshUnknownExpiry: true } : { refreshUnknownExpiry: true });

  /** Valid tokens for every OAuth capability; a capability that has none says why. */
  async function collectTokens(worker: WorkerRow, workerIsFresh = false, options: Parameters<Connections["validToken"]>[2] = {}) {
    const { settings, broken } = await allSettings(worker, workerIsFresh);
    const tokens: { settings: OAuthSettings; accessToken: string; expiresAt: number | null }[] = [];
    const failures: { key: string; envKey: string; error: AppError }[] = broken.map((b) => ({ key: b.key, envKey: envKeyFor(b.name), error: b.error }));
    for (const s of settings) {
      try {
        const token = await connections.validToken(worker, s, options);
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
    if (!capabilities.some((c) => c._tag === "oauth")) return { env: {}, hints: new Map(), renewals: [] };
    const { tokens, failures } = await collectTokens(worker, true);
    const env: EnvPatch = {};
    const hints = new Map<string, string>();
    const renewals: Renewal[] = [];
    // When to renew a token during a run: half its margin before it expires.
    const renewAt = (expiresAt: number) => expiresAt - refreshMargin(Math.max(expiresAt - now(), 0)) / 2;
    for (const token of tokens) {
      env[token.settings.envKey] = token.accessToken;
      if (token.expiresAt !== null) {
        // A run that outlasts the token gets a fresh one pushed in before it expires.
        renewals.push({
          at: renewAt(token.expiresAt),
          renew: async () => {
            // Within the margin by now, so this refreshes, unless someone (maybe another server
            // process) just did; either way the run's process gets the current token.
            const next = await connections.validToken(worker, token.settings);
            executor.pushEnv(worker.id, { [token.settings.envKey]: next.accessToken });
            return next.expiresAt === null ? null : renewAt(next.expiresAt);
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

    /** The provider's redirect to /workers/oauth/callback: what the page tells the person. */
    async callback(query: URLSearchParams): Promise<CallbackOutcome> {
      let flow;
      try {
        flow = await takeFlow(db, query.get("state"), now());
      } catch (error) {
        if (!isAppError(error)) throw error;
        return { ok: false, title: "Authorization link not valid", message: error.message, hint: error.hint };
      }
      const fail = async (error: AppError): Promise<CallbackOutcome> => {
        await oauthStore.completeFlow(db, flow.id, { status: "failed", error: error.message, hint: error.hint ?? null }, now());
        return { ok: false, title: "Connection failed", message: error.message, hint: error.hint };
      };
      // The flow names its worker; a worker deleted meanwhile answers worker_not_found.
      const worker = await workersStore.findWorker(db, flow.workspace_id, flow.worker_id);
      if (!worker) return fail(workerNotFound(flow.worker_id));
      try {
        const settings = await settingsFor(worker, flow.capability_key);
        const answer = await exchangeCode(keyring, flow, settings, query);
        await connections.store(worker, settings, answer);
        await oauthStore.completeFlow(db, flow.id, { status: "connected" }, now());
        log.info({ workerId: worker.id, capability: settings.key }, "oauth connection stored");
        return {
          ok: true,
          title: "Connected",
          message: `${settings.key} (${settings.name}) is connected for worker ${worker.name}. You can close this window and return to the terminal.`,
        };
      } catch (error) {
        if (isAppError(error)) {
          // A client the provider refused: name the secrets to check, as everywhere else.
          if (error.details?.providerError === "client_rejected") {
            const names = await clientSecretNames(worker, flow.capability_key).catch(() => []);
            return fail(new AppError(error.code, error.message, { hint: clientSecretsHint(names), details: error.details }));
          }
          return fail(error);
        }
        log.error({ err: error, flowId: flow.id }, "oauth callback failed");
        return fail(new AppError("internal", "The connection could not be stored because of an internal error.", { hint: "The server log has the details." }));
      }
    },

    /** GetOauthFlow: long-polls a flow of the caller's worker until it ends or `waitMs` passes. */
    async flowStatus(caller: Caller, workerId: string, state: string, waitMs = 0) {
      const worker = await workers.get(caller, workerId);
      const deadline = now() + Math.min(Math.max(waitMs, 0), 25_000);
      for (;;) {
        const flow = await oauthStore.findFlowByStateHash(db, sha256Hex(state));
        if (!flow || flow.worker_id !== worker.id) {
          throw new AppError("oauth_flow_not_found", "No such OAuth flow for this worker.", { hint: "Start one with `ntn workers oauth start <key>`." });
        }
        if (flowExpired(flow, now())) {
          return { status: "failed" as const, error: "The authorization was not completed in time.", hint: "Run `ntn workers oauth start` again." };
        }
        if (flow.status !== "pending") {
          return flow.status === "connected"
            ? { status: "connected" as const }
            : { status: "failed" as const, ...(flow.error ? { error: flow.error } : {}), ...(flow.hint ? { hint: flow.hint } : {}) };
        }
        if (now() >= deadline) return { status: "pending" as const };
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    },

    async token(caller: Caller, workerId: string, key: string, read: TokenRead = {}) {
      const worker = await workers.get(caller, workerId);
      const token = await connections.validToken(worker, await settingsFor(worker, key, true), readOptions(read));
      return { accessToken: token.accessToken, expiresAt: iso(token.expiresAt) };
    },

    async status(caller: Caller, workerId: string, key?: string): Promise<ConnectionStatus[]> {
      const worker = await workers.get(caller, workerId);
      const { settings, broken } = await allSettings(worker);
      const rows = new Map((await oauthStore.listConnections(db, worker.id)).map((r) => [r.capability_key, r]));
      const all = [
        ...settings.map((s) => statusOf(s, rows.get(s.key))),
        ...broken.map((b) => ({ ...statusOf({ key: b.key, name: b.name, envKey: envKeyFor(b.name) }, rows.get(b.key)), lastError: b.error.message })),
      ].sort((a, b) => (a.key < b.key ? -1 : 1));
      if (key === undefined) return all;
      const one = all.filter((s) => s.key === key);
      if (one.length === 0) {
        throw new AppError("capability_not_found", `The worker has no OAuth capability ${JSON.stringify(key)}.`, {
          hint: "Run `ntn workers oauth status` to see its connections.",
        });
      }
      return one;
    },

    /** RFC 7009 revocation where the provider has an endpoint; the stored tokens are deleted either way. */
    async revoke(caller: Caller, workerId: string, key: string) {
      const worker = await workers.get(caller, workerId);
      const row = await oauthStore.findConnection(db, worker.id, key);
      if (!row) throw new AppError("oauth_not_connected", `Connection ${JSON.stringify(key)} is not connected.`, { hint: "Nothing to revoke." });
      let revokedAtProvider = false;
      let message: string | undefined;
      try {
        const settings = await settingsFor(worker, key);
        const revocationEndpoint = settings.revocationEndpoint ?? (await discoverRevocationEndpoint(settings));
        if (revocationEndpoint) {
          const credentials = connections.open(row);
          const token = credentials.refresh_token ?? credentials.access_token;
          const as = { ...authorizationServer(settings), revocation_endpoint: revocationEndpoint.href };
          const response = await oauth.revocationRequest(as, client(settings), clientAuth(settings), token, requestOptions(settings));
          await oauth.processRevocationResponse(response);
          revokedAtProvider = true;
        } else {
          message = "The provider has no token revocation endpoint (RFC 7009) that Workyard knows; revoke the app's access in the provider's settings.";
        }
      } catch (error) {
        message = isAppError(error) ? error.message : `The provider did not confirm the revocation: ${classify(error).message}`;
      }
      await oauthStore.deleteConnection(db, worker.id, key);
      executor.pushEnv(worker.id, { [envKeyFor((await settingsFor(worker, key).catch(() => undefined))?.name ?? key)]: null });
      return { revokedAtProvider, deleted: true, ...(message ? { message } : {}) };
    },

    /** PullEnv's runtime part: a fresh token per connected capability, notices for the others. */
    async pullEnv(worker: WorkerRow, read: TokenRead = {}): Promise<{ env: EnvEntry[]; notices: EnvNotice[] }> {
      // The worker row was read in this same request.
      const { tokens, failures } = await collectTokens(worker, true, readOptions(read));
      return {
        env: tokens.map((t) => ({ key: t.settings.envKey, value: t.accessToken, expiresAt: iso(t.expiresAt) })),
        notices: failures
          .filter((f) => f.error.code !== "oauth_not_connected")
          .map((f) => ({ key: f.envKey, message: `${f.error.message} ${f.error.hint ?? ""}`.trim() }))
          .concat(
            failures
              .filter((f) => f.error.code === "oauth_not_connected")
              .map((f) => ({ key: f.envKey, message: `${f.key} is not connected yet; run \`ntn workers oauth start ${f.key}\`.` })),
          ),
      };
    },

    /** ListCapabilities with each OAuth capability's connection state beside it. */
    async annotate(caller: Caller, workerId: string, capabilities: CapabilitySummary[]): Promise<CapabilityView[]> {
      if (!capabilities.some((c) => c._tag === "oauth")) return capabilities;
      const worker = await workers.get(caller, workerId);
      const rows = new Map((await oauthStore.listConnections(db, worker.id)).map((r) => [r.capability_key, r]));
      return capabilities.map((c) => {
        if (c._tag !== "oauth") return c;
        const row = rows.get(c.key);
        return { ...c, connection: { status: row ? row.status : "not_connected", expiresAt: iso(row?.access_expires_at ?? null) } };
      });
    },
  };
}

export type OAuthService = ReturnType<typeof createOAuthService>;

/** How a user's read of tokens (GetOauthToken, PullEnv) wants them: `refresh` forces one. */
export interface TokenRead {
  refresh?: boolean;
}



/**
 * The provider's RFC 7009 endpoint from its RFC 8414 (or OpenID) metadata at the token endpoint's
 * origin, when it publishes one; undefined otherwise (GitHub, for one, has none).
 */
async function discoverRevocationEndpoint(settings: OAuthSettings): Promise<URL | undefined> {
  const issuer = new URL(settings.tokenEndpoint.origin);
  for (const algorithm of ["oauth2", "oidc"] as const) {
    try {
      const response = await oauth.discoveryRequest(issuer, {
        algorithm,
        [oauth.customFetch]: settings.fetch,
        signal: AbortSignal.timeout(5000),
        ...(issuer.protocol === "http:" ? { [oauth.allowInsecureRequests]: true } : {}),
      });
      const metadata = await oauth.processDiscoveryResponse(issuer, response);
      if (typeof metadata.revocation_endpoint === "string") return new URL(metadata.revocation_endpoint);
    } catch {
      // No metadata there: try the other well-known location, then give up.
    }
  }
  return undefined;
}
