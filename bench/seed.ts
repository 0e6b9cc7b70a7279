/** Seeding the store directly (as a bench may): workers sharing one deployment, and their connections. */
import crypto from "node:crypto";
import type { Kysely } from "kysely";
import type { Database } from "../packages/server/src/store/schema.js";
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
            const sealed = seal(
              keyring,
              JSON.stringify({ access_token: crypto.randomBytes(16).toString("hex"), refresh_token: crypto.randomBytes(16).toString("hex"), token_type: "Bearer" }),
              aad.oauthCredentials(template.workspace_id, id, options.key),
            );
            return {
              worker_id: id,
              capability_key: options.key,
              workspace_id: template.workspace_id,
              status: "connected" as const,
              key_id: sealed.keyId,
              sealed: sealed.sealed,
              has_refresh_token: 1,
              access_expires_at: options.expiresAt,
              expiry_source: "provider" as const,
              connected_at: now,
              obtained_at: now - 3600_000,
              last_refresh_at: null,
              next_refresh_at: options.nextRefreshAt,
              last_error: null,
              last_error_at: null,
              last_error_kind: null,
              failure_count: 0,
              version: 1,
              lease_owner: null,
              lease_expires_at: null,
              updated_at: now,
            };
          }),
        )
        .execute();
    });
  }
  return ids;
}
