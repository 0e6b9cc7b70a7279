import type { Kysely } from "kysely";
import * as oauth from "oauth4webapi";
import { AppError } from "../errors.js";
import { randomToken } from "../ids.js";
import type { Logger } from "../log.js";
import * as oauthStore from "../store/oauth.js";
import type { Database, OauthConnectionRow, WorkerRow } from "../store/schema.js";
import type { Keyring } from "../vault/keyring.js";
import { aad, openText, seal } from "../vault/seal.js";
import { classify, type ProviderFailure } from "./classify.js";
import { authorizationServer, client, clientAuth, requestOptions } from "./http.js";
import type { OAuthSettings } from "./settings.js";

/** Refresh interval for a refreshable token whose expiry nobody told us (shown in `oauth status`). */
export const DEFAULT_REFRESH_INTERVAL_MS = 60 * 60 * 1000;
/** Defaults of RefreshTiming: three provider timeouts. */
export const LEASE_TTL_MS = 30_000;
export const LEASE_WAIT_MS = 30_000;
const MAX_BACKOFF_MS = 30 * 60 * 1000;

/** What the sealed column holds. The refresh token lives here and nowhere else. */
export interface Credentials {
  access_token: string;
  refresh_token?: string | undefined;
  token_type?: string | undefined;
  scope?: string | undefined;
}

export interface ValidToken {
  accessToken: string;
  expiresAt: number | null;
}

/** The clocks of refreshing: the lease outlives the provider's timeout, so a live holder is never overtaken. */
export interface RefreshTiming {
  leaseTtlMs: number;
  /** How long a request waits for another refresher before it gives up with a clear error. */
  leaseWaitMs: number;
  keepAliveMs: number;
}

/**
 * A token whose expiry is unknown (no expires_in, no accessTokenExpireMs) is refreshed before a
 * token or env read, unless it is younger than this: the provider may have expired it already, and
 * the user's recourse after a 401 is to read again.
 */
export const UNKNOWN_EXPIRY_REFRESH_MS = 5000;

export const DEFAULT_TIMING: RefreshTiming = { leaseTtlMs: LEASE_TTL_MS, leaseWaitMs: LEASE_WAIT_MS, keepAliveMs: 7 * 24 * 3600 * 1000 };

/** Refresh before expiry by min(5 minutes, half the token's lifetime). */
export function refreshMargin(lifetimeMs: number): number {
  return Math.min(5 * 60 * 1000, Math.max(0, lifetimeMs) / 2);
}

/**
 * The expiry of a token answer: the provider's `expires_in`, else the worker's
 * accessTokenExpireMs (or the catalog's default), else, for a refreshable token, a default
 * interval; a token with no refresh token and no stated lifetime does not expire.
 */
export function expiryOf(
  answer: { expires_in?: number | undefined },
  settings: Pick<OAuthSettings, "accessTokenTtlMs" | "accessTokenTtlSource">,
  refreshable: boolean,
  now: number,
): { expiresAt: number | null; source: OauthConnectionRow["expiry_source"] } {
  if (typeof answer.expires_in === "number" && answer.expires_in > 0) return { expiresAt: now + answer.expires_in * 1000, source: "provider" };
  if (settings.accessTokenTtlMs) return { expiresAt: now + settings.accessTokenTtlMs, source: settings.accessTokenTtlSource === "catalog" ? "catalog" : "config" };
  if (refreshable) return { expiresAt: now + DEFAULT_REFRESH_INTERVAL_MS, source: "default" };
  return { expiresAt: null, source: "none" };
}

/**
 * A refresh token left unused this long is refreshed anyway: some providers expire idle refresh
 * tokens (Google after six months, others after days), and a connection should not die unseen.
 */
export const KEEP_ALIVE_MS = 7 * 24 * 3600 * 1000;

/**
 * When the background refresher should renew this token: its expiry less the margin, or the
 * keep-alive interval after it was obtained, whichever comes first; never for a token that cannot
 * be refreshed.
 */
export function nextRefreshOf(expiresAt: number | null, obtainedAt: number, refreshable: boolean, keepAliveMs = KEEP_ALIVE_MS): number | null {
  if (!refreshable) return null;
  const keepAlive = obtainedAt + keepAliveMs;
  if (expiresAt === null) return keepAlive;
  return Math.min(expiresAt - refreshMargin(expiresAt - obtainedAt), keepAlive);
}

export function notConnected(key: string): AppError {
  return new AppError("oauth_not_connected", `Connection ${JSON.stringify(key)} is not connected.`, {
    hint: `Run: ntn workers oauth start ${key}`,
  });
}

export function needsReauthorization(key: string, reason: string | null): AppError {
  return new AppError("oauth_needs_reauthorization", `Connection ${JSON.stringify(key)} needs re-authorization${reason ? `: ${reason}` : "."}`, {
    hint: `Run: ntn workers oauth start ${key}`,
  });
}

/**
 * Stored connections and the one path to a valid access token: GetOauthToken, PullEnv and runs
 * all come here. A token that expires within the margin is refreshed first: single-flight within
 * this process, a lease row across processes, and a fenced compare-and-set write, so concurrent
 * requests cause one request to the provider and no write ever overwrites a newer one.
 */
export class Connections {
  private readonly inFlight = new Map<string, Promise<ValidToken>>();

  constructor(
    private readonly options: {
      db: Kysely<Database>;
      keyring: Keyring;
      log: Logger;
      now?: () => number;
      /** A refreshed token, for the processes of the worker that are running now. */
      onRefreshed?: (workerId: string, envKey: string, accessToken: string) => void;
      /** The secrets behind a worker's client id and secret, for configuration errors. */
      clientSecretNames?: (worker: WorkerRow) => Promise<string[]>;
      timing?: Partial<RefreshTiming>;
    },
  ) {
    this.timing = { ...DEFAULT_TIMING, ...options.timing };
  }

  readonly timing: RefreshTiming;

  private now(): number {
    return this.options.now?.() ?? Date.now();
  }

  open(row: OauthConnectionRow): Credentials {
    return JSON.parse(openText(this.options.keyring, { keyId: row.key_id, sealed: row.sealed }, aad.oauthCredentials(row.workspace_id, row.worker_id, row.capability_key))) as Credentials;
  }

  private sealFor(worker: Pick<WorkerRow, "id" | "workspace_id">, key: string, credentials: Credentials) {
    return seal(this.options.keyring, JSON.stringify(credentials), aad.oauthCredentials(worker.workspace_id, worker.id, key));
  }

  /** Stores the tokens of a completed authorization, replacing any earlier connection. */
  async store(worker: WorkerRow, settings: OAuthSettings, answer: oauth.TokenEndpointResponse): Promise<void> {
    const now = this.now();
    const refreshable = typeof answer.refresh_token === "string" && answer.refresh_token.length > 0;
    const credentials: Credentials = {
      access_token: answer.access_token,
      refresh_token: refreshable ? answer.refresh_token : undefined,
      token_type: answer.token_type,
      scope: typeof answer.scope === "string" ? answer.scope : undefined,
    };
    const sealed = this.sealFor(worker, settings.key, credentials);
    const expiry = expiryOf(answer, settings, refreshable, now);
    await oauthStore.replaceConnection(this.options.db, {
      worker_id: worker.id,
      capability_key: settings.key,
      workspace_id: worker.workspace_id,
      status: "connected",
      key_id: sealed.keyId,
      sealed: sealed.sealed,
      has_refresh_token: refreshable ? 1 : 0,
      access_expires_at: expiry.expiresAt,
      expiry_source: expiry.source,
      connected_at: now,
      obtained_at: now,
      last_refresh_at: null,
      next_refresh_at: nextRefreshOf(expiry.expiresAt, now, refreshable, this.timing.keepAliveMs),
      last_error: null,
      last_error_at: null,
      last_error_kind: null,
      failure_count: 0,
      lease_owner: null,
      lease_expires_at: null,
      updated_at: now,
    });
    this.options.onRefreshed?.(worker.id, settings.envKey, answer.access_token);
  }

  private isFresh(row: OauthConnectionRow, now: number): boolean {
    if (row.access_expires_at === null) return true;
    return row.access_expires_at - now > refreshMargin(row.access_expires_at - row.obtained_at);
  }

  private tokenOf(row: OauthConnectionRow): ValidToken {
    return { accessToken: this.open(row).access_token, expiresAt: row.access_expires_at };
  }

  /**
   * A valid access token, refreshed first when it expires within the margin, or, with options,
   * when it was obtained before a time: `refreshObtainedBefore` (the user asked for a refresh),
   * `refreshUnknownExpiry` (its expiry is a guess: refreshed unless obtained in the last 5 s).
   */
  async validToken(worker: WorkerRow, settings: OAuthSettings, options: { refreshObtainedBefore?: number; refreshUnknownExpiry?: boolean } = {}): Promise<ValidToken> {
    const row = await oauthStore.findConnection(this.options.db, worker.id, settings.key);
    if (!row) throw notConnected(settings.key);
    if (row.status === "needs_reauthorization") throw needsReauthorization(settings.key, row.last_error);
    const now = this.now();
    const unknown = options.refreshUnknownExpiry && row.expiry_source === "default" ? now - UNKNOWN_EXPIRY_REFRESH_MS : undefined;
    const before = Math.max(options.refreshObtainedBefore ?? -Infinity, unknown ?? -Infinity);
    const wanted = Number.isFinite(before) && row.obtained_at < before ? before : undefined;
    if (wanted === undefined && this.isFresh(row, now)) return this.tokenOf(row);
    if (!row.has_refresh_token) {
      if (row.access_expires_at !== null && row.access_expires_at <= now) {
        throw needsReauthorization(settings.key, "the access token expired and the provider issued no refresh token");
      }
      return this.tokenOf(row);
    }
    const flightKey = `${worker.id}\0${settings.key}`;
    let pending = this.inFlight.get(flightKey);
    if (!pending) {
      pending = this.refreshUnderLease(worker, settings, row, wanted).finally(() => this.inFlight.delete(flightKey));
      this.inFlight.set(flightKey, pending);
    }
    return pending;
  }

  /**
   * The background refresher's entry: refreshes a due connection if this process gets its lease at
   * once (another process holding it is already refreshing), and reports what happened.
   */
  async refreshInBackground(worker: WorkerRow, settings: OAuthSettings, seen: OauthConnectionRow): Promise<"refreshed" | "skipped" | "failed"> {
    const { db } = this.options;
    const owner = randomToken(16);
    if (!(await oauthStore.acquireLease(db, worker.id, settings.key, owner, this.now(), this.timing.leaseTtlMs))) return "skipped";
    try {
      const row = await oauthStore.findConnection(db, worker.id, settings.key);
      if (!row || row.status !== "connected" || row.version !== seen.version || (row.next_refresh_at ?? Infinity) > this.now()) {
        await oauthStore.releaseLease(db, worker.id, settings.key, owner);
        return "skipped";
      }
      await this.refresh(worker, settings, row, owner);
      return "refreshed";
    } catch {
      await oauthStore.releaseLease(db, worker.id, settings.key, owner).catch(() => {});
      return "failed";
    }
  }

  /**
   * Takes the lease (or waits for whoever has it), then refreshes unless someone just did: a token
   * is good enough once it is fresh and, when `obtainedBefore` is given, obtained since then.
   */
  private async refreshUnderLease(worker: WorkerRow, settings: OAuthSettings, seen: OauthConnectionRow, obtainedBefore: number | undefined): Promise<ValidToken> {
    const goodEnough = (row: OauthConnectionRow) => this.isFresh(row, this.now()) && (obtainedBefore === undefined || row.obtained_at >= obtainedBefore);
    const { db } = this.options;
    const owner = randomToken(16);
    const deadline = this.now() + this.timing.leaseWaitMs;
    let delay = 50;
    while (!(await oauthStore.acquireLease(db, worker.id, settings.key, owner, this.now(), this.timing.leaseTtlMs))) {
      await new Promise((resolve) => setTimeout(resolve, delay + Math.random() * delay));
      delay = Math.min(delay * 2, 500);
      const row = await oauthStore.findConnection(db, worker.id, settings.key);
      if (!row) throw notConnected(settings.key);
      if (row.status === "needs_reauthorization") throw needsReauthorization(settings.key, row.last_error);
      // Another refresher finished: its token is ours too.
      if (row.version !== seen.version && goodEnough(row)) return this.tokenOf(row);
      // A holder whose lease ran out (it crashed, say) is gone: take the lease over.
      if (row.lease_expires_at !== null && row.lease_expires_at <= this.now()) continue;
      if (this.now() > deadline) {
        if (row.access_expires_at !== null && row.access_expires_at > this.now()) return this.tokenOf(row);
        throw new AppError("oauth_refresh_busy", `Connection ${JSON.stringify(settings.key)} is being refreshed and the refresh has not finished.`, {
          hint: "Try again in a moment; `ntn workers oauth status` shows its last error.",
        });
      }
    }
    try {
      // Double-check under the lease: another process may have refreshed since we looked.
      const row = await oauthStore.findConnection(db, worker.id, settings.key);
      if (!row) throw notConnected(settings.key);
      if (row.status === "needs_reauthorization") throw needsReauthorization(settings.key, row.last_error);
      if (row.version !== seen.version && goodEnough(row)) {
        await oauthStore.releaseLease(db, worker.id, settings.key, owner);
        return this.tokenOf(row);
      }
      // After a transient failure the provider is left alone until the backoff has passed.
      if (row.last_error_kind === "transient" && row.next_refresh_at !== null && row.next_refresh_at > this.now()) {
        await oauthStore.releaseLease(db, worker.id, settings.key, owner);
        if (row.access_expires_at !== null && row.access_expires_at > this.now()) return this.tokenOf(row);
        throw new AppError("oauth_provider_error", `Refreshing ${JSON.stringify(settings.key)} failed: ${row.last_error ?? "the provider failed"}`, {
          hint: `The stored tokens are kept; the next attempt is at ${new Date(row.next_refresh_at).toISOString()}. \`ntn workers oauth status\` shows the last error.`,
        });
      }
      return await this.refresh(worker, settings, row, owner);
    } catch (error) {
      await oauthStore.releaseLease(db, worker.id, settings.key, owner).catch(() => {});
      throw error;
    }
  }

  /** One refresh_token grant (RFC 6749 §6) and its fenced write. Holds the lease. */
  private async refresh(worker: WorkerRow, settings: OAuthSettings, row: OauthConnectionRow, owner: string): Promise<ValidToken> {
    const { db, log } = this.options;
    const credentials = this.open(row);
    if (!credentials.refresh_token) throw needsReauthorization(settings.key, "no refresh token is stored");
    if (!settings.clientId) {
      throw new AppError("oauth_not_configured", `Connection ${JSON.stringify(settings.key)} has no client id to refresh with.`, {
        hint: await this.clientHint(worker),
      });
    }
    let answer: oauth.TokenEndpointResponse;
    try {
      const as = authorizationServer(settings);
      const response = await oauth.refreshTokenGrantRequest(as, client(settings), clientAuth(settings), credentials.refresh_token, requestOptions(settings));
      answer = await oauth.processRefreshTokenResponse(as, client(settings), response);
    } catch (error) {
      const failure = classify(error);
      await this.recordFailure(worker, settings, row, owner, failure);
      log.warn({ workerId: worker.id, capability: settings.key, kind: failure.kind, reason: failure.message }, "token refresh failed");
      if (failure.kind === "reauthorize") throw needsReauthorization(settings.key, failure.message);
      if (failure.kind === "configuration") {
        throw new AppError("oauth_not_configured", `Refreshing ${JSON.stringify(settings.key)} failed: ${failure.message}`, {
          hint: await this.clientHint(worker),
        });
      }
      // Transient: the stored tokens stay; an access token that is still valid is still good.
      if (row.access_expires_at !== null && row.access_expires_at > this.now()) return this.tokenOf(row);
      throw new AppError("oauth_provider_error", `Refreshing ${JSON.stringify(settings.key)} failed: ${failure.message}`, {
        hint: "The stored tokens are kept and the refresh is retried; `ntn workers oauth status` shows the last error.",
      });
    }
    const now = this.now();
    // A provider that rotates refresh tokens sends a new one; one that does not keeps the old.
    const next: Credentials = {
      access_token: answer.access_token,
      refresh_token: answer.refresh_token || credentials.refresh_token,
      token_type: answer.token_type ?? credentials.token_type,
      scope: typeof answer.scope === "string" ? answer.scope : credentials.scope,
    };
    const sealed = this.sealFor(worker, settings.key, next);
    const expiry = expiryOf(answer, settings, true, now);
    const written = await oauthStore.writeRefreshed(db, worker.id, settings.key, { owner, version: row.version }, {
      status: "connected",
      key_id: sealed.keyId,
      sealed: sealed.sealed,
      has_refresh_token: 1,
      access_expires_at: expiry.expiresAt,
      expiry_source: expiry.source,
      obtained_at: now,
      last_refresh_at: now,
      next_refresh_at: nextRefreshOf(expiry.expiresAt, now, true, this.timing.keepAliveMs),
      last_error: null,
      last_error_at: null,
      last_error_kind: null,
      failure_count: 0,
      updated_at: now,
    });
    if (!written) {
      // Our lease ran out and a later refresher wrote: theirs is the newer truth.
      log.warn({ workerId: worker.id, capability: settings.key }, "refresh result dropped: the lease was taken over");
      const current = await oauthStore.findConnection(db, worker.id, settings.key);
      if (current && current.status === "connected" && this.isFresh(current, this.now())) return this.tokenOf(current);
      throw new AppError("oauth_refresh_busy", `Connection ${JSON.stringify(settings.key)} was refreshed concurrently; try again.`);
    }
    this.options.onRefreshed?.(worker.id, settings.envKey, next.access_token);
    return { accessToken: next.access_token, expiresAt: expiry.expiresAt };
  }

  private async recordFailure(worker: WorkerRow, settings: OAuthSettings, row: OauthConnectionRow, owner: string, failure: ProviderFailure): Promise<void> {
    const now = this.now();
    const failures = row.failure_count + 1;
    const backoff = failure.retryAfterMs ?? Math.min(MAX_BACKOFF_MS, 30_000 * 2 ** Math.min(failures - 1, 10)) * (0.8 + Math.random() * 0.4);
    await oauthStore.writeRefreshed(this.options.db, worker.id, settings.key, { owner, version: row.version }, {
      status: failure.kind === "reauthorize" ? "needs_reauthorization" : row.status,
      last_error: failure.message,
      last_error_at: now,
      last_error_kind: failure.kind,
      failure_count: failures,
      next_refresh_at: failure.kind === "reauthorize" ? null : now + Math.round(backoff),
      updated_at: now,
    });
  }

  private async clientHint(worker: WorkerRow): Promise<string> {
    const names = (await this.options.clientSecretNames?.(worker).catch(() => [])) ?? [];
    return clientSecretsHint(names);
  }
}

/** Names the secrets to set, when they could be found; otherwise says what to look for. */
export function clientSecretsHint(names: string[]): string {
  if (names.length === 0) return "Set the client id and secret that src/index.ts reads: ntn workers env set NAME=value ...";
  return `Check ${names.join(" and ")}: ntn workers env set ${names.map((n) => `${n}=...`).join(" ")}`;
}
