import type { Kysely } from "kysely";
import * as oauth from "oauth4webapi";
import { AppError } from "../errors.js";
import type { Logger } from "../log.js";
import * as oauthStore from "../store/oauth.js";
import type { Database, OauthConnectionRow, WorkerRow } from "../store/schema.js";
import type { Keyring } from "../vault/keyring.js";
import { classify, type ProviderFailure } from "./classify.js";
import { openCredentials, sealCredentials, tokenOf, type Credentials, type ValidToken } from "./credentials.js";
import { needsReauthorization, refreshBusy } from "./errors.js";
import { expiryOf, isFresh, nextRefreshOf, stillValid } from "./expiry.js";
import { authorizationServer, client, clientAuth, requestOptions } from "./http.js";
import type { OAuthSettings } from "./settings.js";

/** The longest a failing connection waits between refresh attempts. */
const MAX_BACKOFF_MS = 30 * 60 * 1000;

/**
 * The refresh_token grant: sends it and validates the answer (RFC 6749 §5.1; an error answer,
 * §5.2, or any other failure is thrown as oauth4webapi reports it, for classify.ts).
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-6
 */
export async function refreshTokenGrant(settings: OAuthSettings, refreshToken: string): Promise<oauth.TokenEndpointResponse> {
  const as = authorizationServer(settings);
  const response = await oauth.refreshTokenGrantRequest(as, client(settings), clientAuth(settings), refreshToken, requestOptions(settings));
  return oauth.processRefreshTokenResponse(as, client(settings), response);
}

/**
 * The credentials after a refresh: a provider that rotates refresh tokens sends a new one; one
 * that does not keeps the old (RFC 6749 §6: "MAY issue a new refresh token"; nango#298).
 */
export function refreshedCredentials(answer: oauth.TokenEndpointResponse, previous: Credentials): Credentials {
  return {
    access_token: answer.access_token,
    refresh_token: answer.refresh_token || previous.refresh_token,
    token_type: answer.token_type ?? previous.token_type,
    scope: typeof answer.scope === "string" ? answer.scope : previous.scope,
  };
}

/** After a transient failure the provider is left alone until the backoff (next_refresh_at) has passed. */
export function backingOff(row: OauthConnectionRow, now: number): boolean {
  return row.last_error_kind === "transient" && row.next_refresh_at !== null && row.next_refresh_at > now;
}

/** The error of a read that found the connection backing off and its access token expired. */
export function backingOffError(key: string, row: OauthConnectionRow): AppError {
  return new AppError("oauth_provider_error", `Refreshing ${JSON.stringify(key)} failed: ${row.last_error ?? "the provider failed"}`, {
    hint: `The stored tokens are kept; the next attempt is at ${new Date(row.next_refresh_at!).toISOString()}. \`ntn workers oauth status\` shows the last error.`,
  });
}

/** What a refresh needs around it. */
export interface RefreshContext {
  db: Kysely<Database>;
  /** A write of one connection, announced to every server process (Connections.written). */
  written<T>(workerId: string, key: string, write: (db: Kysely<Database>) => Promise<T>): Promise<T>;
  keyring: Keyring;
  log: Logger;
  now: () => number;
  keepAliveMs: number;
  /** A refreshed token, for the processes of the worker that are running now. */
  onRefreshed?: ((workerId: string, envKey: string, accessToken: string) => void) | undefined;
  /** The hint of a configuration error: which secrets to set. */
  clientHint(worker: WorkerRow): Promise<string>;
}

/**
 * One refresh_token grant (RFC 6749 §6) and its fenced write, by the holder of the lease `owner`
 * on `row`. The rotated refresh token is committed before the new access token is handed out; a
 * write the fence drops (our lease ran out and a later refresher wrote) yields to theirs. A failure
 * is recorded on the row with its kind (classify.ts): `reauthorize` marks the connection,
 * `transient` keeps the tokens and backs off, `configuration` names the client's secrets.
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-6
 */
export async function refreshConnection(ctx: RefreshContext, worker: WorkerRow, settings: OAuthSettings, row: OauthConnectionRow, owner: string): Promise<ValidToken> {
  const { db, keyring, log } = ctx;
  const credentials = openCredentials(keyring, row);
  if (!credentials.refresh_token) throw needsReauthorization(settings.key, "no refresh token is stored");
  if (!settings.clientId) {
    throw new AppError("oauth_not_configured", `Connection ${JSON.stringify(settings.key)} has no client id to refresh with.`, {
      hint: await ctx.clientHint(worker),
    });
  }
  let answer: oauth.TokenEndpointResponse;
  try {
    answer = await refreshTokenGrant(settings, credentials.refresh_token);
  } catch (error) {
    const failure = classify(error);
    await recordFailure(ctx, worker, settings, row, owner, failure);
    log.warn({ workerId: worker.id, capability: settings.key, kind: failure.kind, reason: failure.message }, "token refresh failed");
    if (failure.kind === "reauthorize") throw needsReauthorization(settings.key, failure.message);
    if (failure.kind === "configuration") {
      throw new AppError("oauth_not_configured", `Refreshing ${JSON.stringify(settings.key)} failed: ${failure.message}`, {
        hint: await ctx.clientHint(worker),
      });
    }
    // Transient: the stored tokens stay; an access token that is still valid is still good.
    if (stillValid(row, ctx.now())) return tokenOf(keyring, row);
    throw new AppError("oauth_provider_error", `Refreshing ${JSON.stringify(settings.key)} failed: ${failure.message}`, {
      hint: "The stored tokens are kept and the refresh is retried; `ntn workers oauth status` shows the last error.",
    });
  }
  const now = ctx.now();
  const next = refreshedCredentials(answer, credentials);
  const sealed = sealCredentials(keyring, worker, settings.key, next);
  const expiry = expiryOf(answer, settings, true, now);
  const written = await ctx.written(worker.id, settings.key, (db) => oauthStore.writeRefreshed(db, worker.id, settings.key, { owner, version: row.version }, {
    status: "connected",
    key_id: sealed.keyId,
    sealed: sealed.sealed,
    has_refresh_token: 1,
    access_expires_at: expiry.expiresAt,
    expiry_source: expiry.source,
    obtained_at: now,
    last_refresh_at: now,
    next_refresh_at: nextRefreshOf(expiry.expiresAt, now, true, ctx.keepAliveMs),
    last_error: null,
    last_error_at: null,
    last_error_kind: null,
    failure_count: 0,
    updated_at: now,
  }));
  if (!written) {
    // Our lease ran out and a later refresher wrote: theirs is the newer truth.
    log.warn({ workerId: worker.id, capability: settings.key }, "refresh result dropped: the lease was taken over");
    const current = await oauthStore.findConnection(db, worker.id, settings.key);
    if (current && current.status === "connected" && isFresh(current, ctx.now())) return tokenOf(keyring, current);
    throw refreshBusy(settings.key, true);
  }
  ctx.onRefreshed?.(worker.id, settings.envKey, next.access_token);
  return { accessToken: next.access_token, expiresAt: expiry.expiresAt };
}

/** A failed refresh on the row (fenced, releasing the lease): its kind, and when to try next. */
async function recordFailure(ctx: RefreshContext, worker: WorkerRow, settings: OAuthSettings, row: OauthConnectionRow, owner: string, failure: ProviderFailure): Promise<void> {
  const now = ctx.now();
  const failures = row.failure_count + 1;
  const backoff = failure.retryAfterMs ?? Math.min(MAX_BACKOFF_MS, 30_000 * 2 ** Math.min(failures - 1, 10)) * (0.8 + Math.random() * 0.4);
  await ctx.written(worker.id, settings.key, (db) => oauthStore.writeRefreshed(db, worker.id, settings.key, { owner, version: row.version }, {
    status: failure.kind === "reauthorize" ? "needs_reauthorization" : row.status,
    last_error: failure.message,
    last_error_at: now,
    last_error_kind: failure.kind,
    failure_count: failures,
    next_refresh_at: failure.kind === "reauthorize" ? null : now + Math.round(backoff),
    updated_at: now,
  }));
}
