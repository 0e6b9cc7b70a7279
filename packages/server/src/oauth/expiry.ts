import type { OauthConnectionRow } from "../store/schema.js";
import type { OAuthSettings } from "./settings.js";

/*
 * When a token expires and when it is renewed: the whole expiry policy, as pure functions of a
 * token answer or a stored row and the time.
 */

/** Refresh interval for a refreshable token whose expiry nobody told us (shown in `oauth status`). */
export const DEFAULT_REFRESH_INTERVAL_MS = 60 * 60 * 1000;

/**
 * A token whose expiry is unknown (no expires_in, no accessTokenExpireMs) is refreshed before a
 * token or env read, unless it is younger than this: the provider may have expired it already, and
 * the user's recourse after a 401 is to read again.
 */
export const UNKNOWN_EXPIRY_REFRESH_MS = 5000;

/**
 * A refresh token left unused this long is refreshed anyway: some providers expire idle refresh
 * tokens (Google after six months, others after days), and a connection should not die unseen.
 */
export const KEEP_ALIVE_MS = 7 * 24 * 3600 * 1000;

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

/** Good to hand out without a refresh: it does not expire, or not within the margin. */
export function isFresh(row: Pick<OauthConnectionRow, "access_expires_at" | "obtained_at">, now: number): boolean {
  if (row.access_expires_at === null) return true;
  return row.access_expires_at - now > refreshMargin(row.access_expires_at - row.obtained_at);
}

/** Still accepted by the provider, as far as we know (within the margin or not): it has an expiry and it is ahead. */
export function stillValid(row: Pick<OauthConnectionRow, "access_expires_at">, now: number): boolean {
  return row.access_expires_at !== null && row.access_expires_at > now;
}

/** When to renew a token during a run: half its margin before it expires. */
export function renewDuringRunAt(expiresAt: number, now: number): number {
  return expiresAt - refreshMargin(Math.max(expiresAt - now, 0)) / 2;
}

/**
 * What a read wants beyond the plain expiry: `refreshObtainedBefore` (the user asked for a
 * refresh), `refreshUnknownExpiry` (a token whose expiry is a guess is refreshed unless obtained
 * in the last UNKNOWN_EXPIRY_REFRESH_MS).
 */
export interface Freshness {
  refreshObtainedBefore?: number;
  refreshUnknownExpiry?: boolean;
}

/**
 * What a user's read of tokens (GetOauthToken, PullEnv) refreshes first: tokens whose expiry is
 * unknown (the seed's promise: after a 401, pull again and get a valid one), and every token
 * when asked to. Runs keep to the plain expiry.
 */
export function userReadFreshness(read: { refresh?: boolean }, now: number): Freshness {
  return read.refresh ? { refreshObtainedBefore: now, refreshUnknownExpiry: true } : { refreshUnknownExpiry: true };
}

/**
 * The time a token must have been obtained after to satisfy `wanted`, when this row's is older;
 * undefined when the row's token is recent enough (the plain expiry decides then).
 */
export function obtainedAfterWanted(row: Pick<OauthConnectionRow, "expiry_source" | "obtained_at">, now: number, wanted: Freshness): number | undefined {
  const unknown = wanted.refreshUnknownExpiry && row.expiry_source === "default" ? now - UNKNOWN_EXPIRY_REFRESH_MS : undefined;
  const before = Math.max(wanted.refreshObtainedBefore ?? -Infinity, unknown ?? -Infinity);
  return Number.isFinite(before) && row.obtained_at < before ? before : undefined;
}
