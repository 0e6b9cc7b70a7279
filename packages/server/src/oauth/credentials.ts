import type { OauthConnectionRow, WorkerRow } from "../store/schema.js";
import type { Keyring } from "../vault/keyring.js";
import { aad, openText, seal, type Sealed } from "../vault/seal.js";

/** What the sealed column of a connection holds. The refresh token lives here and nowhere else. */
export interface Credentials {
  access_token: string;
  refresh_token?: string | undefined;
  token_type?: string | undefined;
  scope?: string | undefined;
}

/** An access token handed out, with its expiry (ms; null: none known and none needed). */
export interface ValidToken {
  accessToken: string;
  expiresAt: number | null;
}

/** A connection's credentials, opened (bound to its workspace, worker and capability key). */
export function openCredentials(keyring: Keyring, row: OauthConnectionRow): Credentials {
  return JSON.parse(openText(keyring, { keyId: row.key_id, sealed: row.sealed }, aad.oauthCredentials(row.workspace_id, row.worker_id, row.capability_key))) as Credentials;
}

export function sealCredentials(keyring: Keyring, worker: Pick<WorkerRow, "id" | "workspace_id">, key: string, credentials: Credentials): Sealed {
  return seal(keyring, JSON.stringify(credentials), aad.oauthCredentials(worker.workspace_id, worker.id, key));
}

/** The stored access token of a row, as it is. */
export function tokenOf(keyring: Keyring, row: OauthConnectionRow): ValidToken {
  return { accessToken: openCredentials(keyring, row).access_token, expiresAt: row.access_expires_at };
}
