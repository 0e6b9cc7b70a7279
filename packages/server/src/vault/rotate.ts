import { sql, type Kysely } from "kysely";
import * as deploymentsStore from "../store/deployments.js";
import type { Database } from "../store/schema.js";
import * as oauthStore from "../store/oauth.js";
import * as secretsStore from "../store/secrets.js";
import * as uploadsStore from "../store/uploads.js";
import * as webhooksStore from "../store/webhooks.js";
import type { Keyring } from "./keyring.js";
import { aad, open, seal, type Sealed } from "./seal.js";

/**
 * Every kind of sealed value in the store: how to find rows left under an old key (or, for kinds
 * that were once stored in clear, not sealed yet), their associated data, and how to swap in a new
 * ciphertext with a compare-and-set (a row written by a running server in between is already under
 * the new key and is left alone).
 */
export interface SealedKind {
  name: string;
  stale(
    db: Kysely<Database>,
    currentKeyId: string,
    limit: number,
  ): Promise<{ value: Sealed | { clear: Buffer }; aad: string; replace(next: Sealed): Promise<boolean> }[]>;
}

export const SEALED_KINDS: SealedKind[] = [
  {
    name: "secrets",
    async stale(db, current, limit) {
      const rows = await secretsStore.secretsSealedUnderOtherKeys(db, current, limit);
      return rows.map((row) => ({
        value: { keyId: row.key_id, sealed: row.sealed },
        aad: aad.secret(row.workspace_id, row.worker_id, row.name),
        replace: (next: Sealed) => secretsStore.resealSecret(db, row, { key_id: next.keyId, sealed: next.sealed }),
      }));
    },
  },
  {
    name: "manifests",
    async stale(db, current, limit) {
      const rows = await deploymentsStore.manifestsSealedUnderOtherKeys(db, current, limit);
      return rows.map((row) => {
        const value = { keyId: row.manifest_key_id!, sealed: row.manifest_sealed! };
        return {
          value,
          aad: aad.manifest(row.workspace_id, row.worker_id, row.id),
          replace: (next: Sealed) => deploymentsStore.resealManifest(db, row.id, value, next),
        };
      });
    },
  },
  {
    name: "bundles",
    async stale(db, current, limit) {
      const rows = await deploymentsStore.bundlesSealedUnderOtherKeys(db, current, limit);
      return rows.map((row) => ({
        // Rows from before 0.2 hold the bundle in clear: sealed now, in the same shape as new ones.
        value:
          row.bundle_key_id && row.bundle_sealed
            ? { keyId: row.bundle_key_id, sealed: row.bundle_sealed }
            : { clear: Buffer.from(JSON.stringify({ code: row.bundle ?? "", sourceMap: row.source_map ?? "" })) },
        aad: aad.bundle(row.workspace_id, row.worker_id, row.id),
        replace: (next: Sealed) => deploymentsStore.resealBundle(db, row.id, row.bundle_key_id, next),
      }));
    },
  },
  {
    name: "OAuth connections",
    async stale(db, current, limit) {
      const rows = await oauthStore.connectionsSealedUnderOtherKeys(db, current, limit);
      return rows.map((row) => ({
        value: { keyId: row.key_id, sealed: row.sealed },
        aad: aad.oauthCredentials(row.workspace_id, row.worker_id, row.capability_key),
        replace: (next: Sealed) => oauthStore.resealConnection(db, row, { key_id: next.keyId, sealed: next.sealed }),
      }));
    },
  },
  {
    name: "OAuth flows",
    async stale(db, current, limit) {
      const rows = await oauthStore.flowsSealedUnderOtherKeys(db, current, limit);
      return rows.map((row) => ({
        value: { keyId: row.key_id, sealed: row.sealed },
        aad: aad.oauthFlow(row.workspace_id, row.worker_id, row.id),
        replace: (next: Sealed) => oauthStore.resealFlow(db, row, { key_id: next.keyId, sealed: next.sealed }),
      }));
    },
  },
  {
    name: "source archives",
    async stale(db, current, limit) {
      // Each may be as large as an upload: a few at a time, not a batch of hundreds in memory.
      const rows = await uploadsStore.archivesSealedUnderOtherKeys(db, current, Math.min(limit, 2));
      return rows.map((row) => ({
        value: row.archive_key_id === null ? { clear: row.archive } : { keyId: row.archive_key_id, sealed: row.archive },
        aad: aad.archive(row.workspace_id, row.worker_id, row.id),
        replace: (next: Sealed) => uploadsStore.resealArchive(db, row, next),
      }));
    },
  },
  {
    name: "webhook URLs",
    async stale(db, current, limit) {
      const rows = await webhooksStore.webhookSecretsSealedUnderOtherKeys(db, current, limit);
      return rows.map((row) => ({
        value: { keyId: row.secret_key_id, sealed: row.secret_sealed },
        aad: aad.webhookSecret(row.workspace_id, row.worker_id, row.key),
        replace: (next: Sealed) => webhooksStore.resealWebhookSecret(db, row, next),
      }));
    },
  },
  {
    name: "webhook deliveries",
    async stale(db, current, limit) {
      const rows = await webhooksStore.deliveriesSealedUnderOtherKeys(db, current, limit);
      return rows.map((row) => ({
        value: { keyId: row.request_key_id, sealed: row.request_sealed },
        aad: aad.webhookDelivery(row.workspace_id, row.worker_id, row.id),
        replace: (next: Sealed) => webhooksStore.resealDelivery(db, row.id, row.request_key_id, next),
      }));
    },
  },
];

/** The distinct key ids the store's ciphertexts were sealed under. */
export async function keyIdsInUse(db: Kysely<Database>): Promise<string[]> {
  const rows = await sql<{ key_id: string }>`
    select key_id from secrets
    union select manifest_key_id as key_id from deployments where manifest_key_id is not null
    union select bundle_key_id as key_id from deployments where bundle_key_id is not null
    union select key_id from oauth_connections
    union select key_id from oauth_flows
    union select archive_key_id as key_id from uploads where archive_key_id is not null
    union select secret_key_id as key_id from webhooks
    union select request_key_id as key_id from webhook_deliveries
  `.execute(db);
  return rows.rows.map((r) => r.key_id);
}

export interface RotationReport {
  resealed: Record<string, number>;
  keyId: string;
}

/**
 * Re-seals every value under the keyring's current key, in batches, while servers keep serving.
 * A row rewritten meanwhile by a server is skipped by the compare-and-set and read again; if rows
 * keep coming back under an old key, some server still seals with it and the operator must add
 * the new key there first.
 */
export async function resealAll(db: Kysely<Database>, keyring: Keyring, batch = 200): Promise<RotationReport> {
  const current = keyring.current();
  const report: RotationReport = { resealed: {}, keyId: current.id };
  for (const kind of SEALED_KINDS) {
    let count = 0;
    let idlePasses = 0;
    for (;;) {
      const rows = await kind.stale(db, current.id, batch);
      if (rows.length === 0) break;
      let progressed = false;
      for (const row of rows) {
        const plaintext = "clear" in row.value ? row.value.clear : open(keyring, row.value, row.aad);
        const next = seal(keyring, plaintext, row.aad);
        if (await row.replace(next)) {
          count += 1;
          progressed = true;
        }
      }
      idlePasses = progressed ? 0 : idlePasses + 1;
      if (idlePasses >= 5) {
        throw new Error(
          `${kind.name} keep being written under an old key: a running server lacks key ${current.id}. Add it to every server, then rotate again.`,
        );
      }
      if (!progressed) await new Promise((resolve) => setTimeout(resolve, 500));
    }
    report.resealed[kind.name] = count;
  }
  return report;
}
