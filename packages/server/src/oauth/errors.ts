import { AppError } from "../errors.js";
import { capabilityNotFound } from "../executor/protocol.js";
import type { OauthConnectionRow } from "../store/schema.js";

/*
 * The OAuth errors more than one module raises, each made here once: code, words, next step.
 * Errors that only one protocol step raises stay beside it (refresh.ts, exchange.ts, ...).
 */

export function notConnected(key: string, hint = `Run: ntn workers oauth start ${key}`): AppError {
  return new AppError("oauth_not_connected", `Connection ${JSON.stringify(key)} is not connected.`, { hint });
}

export function needsReauthorization(key: string, reason: string | null): AppError {
  return new AppError("oauth_needs_reauthorization", `Connection ${JSON.stringify(key)} needs re-authorization${reason ? `: ${reason}` : "."}`, {
    hint: `Run: ntn workers oauth start ${key}`,
  });
}

/**
 * The "not connected" check, the one place it is written: a stored connection that can give
 * tokens (connected), or the error that says why not (none stored, or it needs re-authorization).
 */
export function connectedRow(row: OauthConnectionRow | undefined, key: string): OauthConnectionRow {
  if (!row) throw notConnected(key);
  if (row.status === "needs_reauthorization") throw needsReauthorization(key, row.last_error);
  return row;
}

/** Another refresher holds the lease past the wait (`finished: false`), or wrote over ours (`true`). */
export function refreshBusy(key: string, finished: boolean): AppError {
  return finished
    ? new AppError("oauth_refresh_busy", `Connection ${JSON.stringify(key)} was refreshed concurrently; try again.`)
    : new AppError("oauth_refresh_busy", `Connection ${JSON.stringify(key)} is being refreshed and the refresh has not finished.`, {
        hint: "Try again in a moment; `ntn workers oauth status` shows its last error.",
      });
}

/**
 * `capability_not_found` for an OAuth key, the one place it is made: `otherTag` when the key names
 * a capability of another kind; `among: "connections"` when the key was looked for among the
 * worker's OAuth connections (GetOauthStatus) rather than its manifest.
 */
export function oauthCapabilityNotFound(key: string, options: { otherTag?: string; among?: "manifest" | "connections" } = {}): AppError {
  if (options.otherTag !== undefined) {
    return new AppError("capability_not_found", `${JSON.stringify(key)} is a ${options.otherTag} capability, not an OAuth one.`, {
      hint: "Run `ntn workers capabilities list` to see its OAuth capabilities.",
    });
  }
  if (options.among === "connections") {
    return new AppError("capability_not_found", `The worker has no OAuth capability ${JSON.stringify(key)}.`, {
      hint: "Run `ntn workers oauth status` to see its connections.",
    });
  }
  const notFound = capabilityNotFound(key);
  return new AppError(notFound.code, notFound.message, { hint: notFound.hint });
}

/**
 * The provider refused the client while a person authorized (invalid_client, unauthorized_client
 * on the redirect, or a configuration failure at the token endpoint): typed where it arises
 * (exchange.ts), so the callback can name the secrets behind the client id and secret.
 */
export class ClientRejectedError extends AppError {
  constructor(message: string, options: { hint?: string; details?: Record<string, unknown> } = {}) {
    super("oauth_provider_error", message, options);
    this.name = "ClientRejectedError";
  }
}
