/** Seeding the store directly (as a bench may): workers sharing one deployment, and their connections. */
import crypto from "node:crypto";
import type { Kysely } from "kysely";
import * as oauthStore from "../packages/server/src/store/oauth.js";
import type { Database, OauthConnectionRow } from "../packages/server/src/store/schema.js";
import type { Keyring } from "../packages/server/src/vault/keyring.js";
import { aad, seal } from "../packages/server/src/vault/seal.js";

/**
 * `count` workers that run the same live deployment as `template` (so their manifests are the
 * template's, read with the same secrets), each with a connection of capability `key` whose
 * refresh is due at `nextRefreshAt`.
 */
export async function seedConnections(
  db: Kysely<Database>,
  keyring: Keyring,
  options: { templateWorkerId: string; key: string; count: number; nextRefreshAt: number; expiresAt: number },
): Promise<string[]> {
  const template = await db.selectFrom("workers").selectAll().where("id", "=", options.templateWorkerId).executeTakeFirstOrThrow();
  const ids: string[] = [];
  const now = Date.now();
  for (let start = 0; start < options.count; start += 500) {
    const batch = Array.from({ length: Math.min(500, options.count - start) }, () => crypto.randomUUID());
    ids.push(...batch);
    await db.transaction().execute(async (trx) => {
      await trx
        .insertInto("workers")
        .values(batch.map((id, i) => ({ ...template, id, name: `seeded-${start + i}`, created_at: now, updated_at: now })))
        .execute();
      await trx
        .insertInto("oauth_connections")
        .values(
          batch.map((id) => {
            return connectionRow(keyring, template.workspace_id, id, options.key, { expiresAt: options.expiresAt, nextRefreshAt: options.nextRefreshAt });
          }),
        )
        .execute();
    });
  }
  return ids;
}

/** A connection as a completed authorization stores it, with fresh random tokens. */
function connectionRow(keyring: Keyring, workspaceId: string, workerId: string, key: string, at: { expiresAt: number; nextRefreshAt: number }): OauthConnectionRow {
  const now = Date.now();
  const sealed = seal(
    keyring,
    JSON.stringify({ access_token: crypto.randomBytes(16).toString("hex"), refresh_token: crypto.randomBytes(16).toString("hex"), token_type: "Bearer" }),
    aad.oauthCredentials(workspaceId, workerId, key),
  );
  return {
    worker_id: workerId,
    capability_key: key,
    workspace_id: workspaceId,
    status: "connected",
    key_id: sealed.keyId,
    sealed: sealed.sealed,
    has_refresh_token: 1,
    access_expires_at: at.expiresAt,
    expiry_source: "provider",
    connected_at: now,
    obtained_at: now - 3600_000,
    last_refresh_at: null,
    next_refresh_at: at.nextRefreshAt,
    last_error: null,
    last_error_at: null,
    last_error_kind: null,
    failure_count: 0,
    version: 1,
    lease_owner: null,
    lease_expires_at: null,
    updated_at: now,
  };
}

/** One connection of `key` for a deployed worker, valid until `expiresAt` (refresh due 5 minutes before). */
export async function seedOauthConnection(db: Kysely<Database>, keyring: Keyring, workerId: string, key: string, expiresAt: number): Promise<void> {
  const worker = await db.selectFrom("workers").select("workspace_id").where("id", "=", workerId).executeTakeFirstOrThrow();
  await oauthStore.replaceConnection(db, connectionRow(keyring, worker.workspace_id, workerId, key, { expiresAt, nextRefreshAt: expiresAt - 300_000 }));
}
