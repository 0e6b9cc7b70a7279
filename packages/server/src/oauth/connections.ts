import type * as oauth from "oauth4webapi";
import type { Kysely } from "kysely";
import type { Logger } from "../log.js";
import type { ChangeFeed } from "../store/changes.js";
import * as oauthStore from "../store/oauth.js";
import { ReadCache } from "../store/read-cache.js";
import type { Database, OauthConnectionRow, WorkerRow } from "../store/schema.js";
import type { Keyring } from "../vault/keyring.js";
import { VaultError } from "../vault/seal.js";
import { clientSecretsHint } from "./client-secrets.js";
import { openCredentials, sealCredentials, tokenOf, type Credentials, type ValidToken } from "./credentials.js";
import { connectedRow, needsReauthorization } from "./errors.js";
import { DEFAULT_REFRESH_INTERVAL_MS, expiryOf, isFresh, KEEP_ALIVE_MS, nextRefreshOf, obtainedAfterWanted, stillValid, type Freshness } from "./expiry.js";
import { leaseOrNewerRow, leaseTimingFor, tryLease, type LeaseTiming } from "./lease.js";
import { PROVIDER_TIMEOUT_MS } from "./http.js";
import { backingOff, backingOffError, refreshConnection, type RefreshContext } from "./refresh.js";
import type { OAuthSettings } from "./settings.js";

/** The clocks of refreshing: the lease's (lease.ts) and the keep-alive of idle refresh tokens. */
export interface RefreshTiming extends LeaseTiming {
  keepAliveMs: number;
}

const DEFAULT_TIMING: RefreshTiming = { ...leaseTimingFor(PROVIDER_TIMEOUT_MS), keepAliveMs: KEEP_ALIVE_MS };

/** A connection as `oauth status` shows it: the domain's shape, which GetOauthStatus sends as it is. */
export interface ConnectionStatus {
  key: string;
  name: string;
  envKey: string;
  status: "connected" | "not_connected" | "needs_reauthorization";
  expiresAt: string | null;
  /** provider | config | catalog | default | none: where the expiry comes from. */
  expirySource: OauthConnectionRow["expiry_source"] | null;
  hasRefreshToken: boolean;
  connectedAt: string | null;
  lastRefreshAt: string | null;
  nextRefreshAt: string | null;
  lastError: string | null;
  lastErrorAt: string | null;
  /** Shown when no expiry was given: how often a refreshable token is renewed. */
  defaultRefreshIntervalMs: number;
}

/** A connection's state beside its capability (ListCapabilities). */
export interface ConnectionState {
  status: ConnectionStatus["status"];
  expiresAt: string | null;
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** A capability's stored connection (or none) as `oauth status` shows it. */
export function statusOf(settings: { key: string; name: string; envKey: string }, row: OauthConnectionRow | undefined): ConnectionStatus {
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

export function stateOf(row: OauthConnectionRow | undefined): ConnectionState {
  return { status: row ? row.status : "not_connected", expiresAt: iso(row?.access_expires_at ?? null) };
}

/**
 * Stored connections and the one path to a valid access token: GetOauthToken, PullEnv and runs
 * all come here. A token that expires within the margin (expiry.ts) is refreshed first:
 * single-flight within this process, the lease across processes (lease.ts), and the grant with
 * its fenced compare-and-set write (refresh.ts), so concurrent requests cause one request to the
 * provider and no write ever overwrites a newer one.
 */
export class Connections {
  private readonly inFlight = new Map<string, Promise<ValidToken>>();
  readonly timing: RefreshTiming;
  private readonly refreshContext: RefreshContext;
  /**
   * Connection rows as stored (tokens sealed, opened on each use), for the token reads of the hot
   * path; every write of a connection goes through `written`, which tells every server process.
   */
  private readonly rows: ReadCache<OauthConnectionRow>;

  constructor(
    private readonly options: {
      db: Kysely<Database>;
      /** Connection rows are kept in memory between requests; writes to them are told here (changes.ts). */
      changes: ChangeFeed;
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
    this.rows = new ReadCache(options.changes, "oauth_connections", (row) => connectionId(row.worker_id, row.capability_key));
    this.refreshContext = {
      db: options.db,
      written: (workerId, key, write) => this.written(workerId, key, write),
      keyring: options.keyring,
      log: options.log,
      now: () => this.now(),
      keepAliveMs: this.timing.keepAliveMs,
      onRefreshed: options.onRefreshed,
      clientHint: async (worker) => clientSecretsHint((await options.clientSecretNames?.(worker).catch(() => [])) ?? []),
    };
  }

  private now(): number {
    return this.options.now?.() ?? Date.now();
  }

  open(row: OauthConnectionRow): Credentials {
    return openCredentials(this.options.keyring, row);
  }

  private tokenOf(row: OauthConnectionRow): ValidToken {
    return tokenOf(this.options.keyring, row);
  }

  find(worker: Pick<WorkerRow, "id">, key: string): Promise<OauthConnectionRow | undefined> {
    return oauthStore.findConnection(this.options.db, worker.id, key);
  }

  /** A write of one connection, announced to every server process in its own transaction. */
  private written<T>(workerId: string, key: string, write: (db: Kysely<Database>) => Promise<T>): Promise<T> {
    return this.options.changes.transaction(this.options.db, async (trx, publish) => {
      const result = await write(trx);
      publish({ table: "oauth_connections", id: connectionId(workerId, key) });
      return result;
    });
  }

  /** The background refresher gives up on a connection for a while (its configuration cannot be read). */
  async postpone(row: OauthConnectionRow, next: number, error: string): Promise<void> {
    await this.written(row.worker_id, row.capability_key, (db) => oauthStore.postponeRefresh(db, row, next, error, this.now()));
  }

  /** A worker's stored connections by capability key. */
  async byKey(worker: Pick<WorkerRow, "id">): Promise<Map<string, OauthConnectionRow>> {
    return new Map((await oauthStore.listConnections(this.options.db, worker.id)).map((r) => [r.capability_key, r]));
  }

  /** Deletes a connection's stored tokens; the caller revoked them at the provider first where it could. */
  async delete(worker: Pick<WorkerRow, "id">, key: string): Promise<void> {
    await this.written(worker.id, key, (db) => oauthStore.deleteConnection(db, worker.id, key));
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
    const sealed = sealCredentials(this.options.keyring, worker, settings.key, credentials);
    const expiry = expiryOf(answer, settings, refreshable, now);
    const row: Omit<OauthConnectionRow, "version"> = {
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
    };
    await this.written(worker.id, settings.key, (db) => oauthStore.replaceConnection(db, row));
    this.options.onRefreshed?.(worker.id, settings.envKey, answer.access_token);
  }

  /**
   * A valid access token, refreshed first when it expires within the margin, or when `wanted`
   * asks for a newer one (expiry.ts, Freshness).
   */
  async validToken(worker: WorkerRow, settings: OAuthSettings, wanted: Freshness = {}, fromMemory = true): Promise<ValidToken> {
    const id = connectionId(worker.id, settings.key);
    const found = fromMemory ? await this.rows.get(id, () => this.find(worker, settings.key)) : await this.find(worker, settings.key);
    const row = connectedRow(found, settings.key);
    const now = this.now();
    const obtainedAfter = obtainedAfterWanted(row, now, wanted);
    /** The row's token; a row kept in memory sealed under a key this process no longer has (an offline rotate-key) is read anew. */
    const tokenOfRow = async (): Promise<ValidToken> => {
      try {
        return this.tokenOf(row);
      } catch (error) {
        if (!(error instanceof VaultError) || !fromMemory) throw error;
        this.rows.forget(id);
        return this.validToken(worker, settings, wanted, false);
      }
    };
    if (obtainedAfter === undefined && isFresh(row, now)) return tokenOfRow();
    if (!row.has_refresh_token) {
      if (row.access_expires_at !== null && row.access_expires_at <= now) {
        throw needsReauthorization(settings.key, "the access token expired and the provider issued no refresh token");
      }
      return tokenOfRow();
    }
    const flightKey = `${worker.id}\0${settings.key}`;
    let pending = this.inFlight.get(flightKey);
    if (!pending) {
      pending = this.refreshUnderLease(worker, settings, row, obtainedAfter).finally(() => this.inFlight.delete(flightKey));
      this.inFlight.set(flightKey, pending);
    }
    return pending;
  }

  /**
   * The background refresher's entry: refreshes a due connection if this process gets its lease at
   * once (another process holding it is already refreshing), and reports what happened.
   */
  async refreshInBackground(worker: WorkerRow, settings: OAuthSettings, seen: OauthConnectionRow): Promise<"refreshed" | "skipped" | "failed"> {
    const lease = await tryLease(this.options.db, { workerId: worker.id, key: settings.key }, this.now(), this.timing.leaseTtlMs);
    if (!lease) return "skipped";
    try {
      const row = await this.find(worker, settings.key);
      if (!row || row.status !== "connected" || row.version !== seen.version || (row.next_refresh_at ?? Infinity) > this.now()) {
        await lease.release();
        return "skipped";
      }
      await refreshConnection(this.refreshContext, worker, settings, row, lease.owner);
      return "refreshed";
    } catch {
      await lease.release().catch(() => {});
      return "failed";
    }
  }

  /**
   * Takes the lease (or waits for whoever has it), then refreshes unless someone just did: a token
   * is good enough once it is fresh and, when `obtainedAfter` is given, obtained since then.
   */
  private async refreshUnderLease(worker: WorkerRow, settings: OAuthSettings, seen: OauthConnectionRow, obtainedAfter: number | undefined): Promise<ValidToken> {
    const goodEnough = (row: OauthConnectionRow) => isFresh(row, this.now()) && (obtainedAfter === undefined || row.obtained_at >= obtainedAfter);
    const taken = await leaseOrNewerRow(this.options.db, { workerId: worker.id, key: settings.key }, { seen, timing: this.timing, now: () => this.now(), goodEnough });
    if (!taken.lease) return this.tokenOf(taken.row);
    const { lease, row } = taken;
    try {
      if (backingOff(row, this.now())) {
        await lease.release();
        if (stillValid(row, this.now())) return this.tokenOf(row);
        throw backingOffError(settings.key, row);
      }
      return await refreshConnection(this.refreshContext, worker, settings, row, lease.owner);
    } catch (error) {
      await lease.release().catch(() => {});
      throw error;
    }
  }
}

/** A connection's id on the change feed and in memory. */
function connectionId(workerId: string, key: string): string {
  return `${workerId}/${key}`;
}
