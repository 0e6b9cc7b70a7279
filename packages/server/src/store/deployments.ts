import type { Kysely } from "kysely";
import { prepared } from "./prepared.js";
import type { Database, DeploymentRow } from "./schema.js";

type Db = Kysely<Database>;

export async function insertDeployment(db: Db, row: DeploymentRow): Promise<void> {
  await db.insertInto("deployments").values(row).execute();
}

/** A deployment without its bundle, map and log: what every request needs, cheaply. */
export type DeploymentMeta = Omit<DeploymentRow, "bundle" | "source_map" | "bundle_key_id" | "bundle_sealed" | "build_log">;

const META = [
  "id",
  "workspace_id",
  "worker_id",
  "upload_id",
  "created_at",
  "finished_at",
  "status",
  "lockfile_hash",
  "capabilities",
  "manifest_key_id",
  "manifest_sealed",
  "manifest_secrets_version",
  "error",
] as const;

const deploymentMeta = prepared((db: Db, id: string) => db.selectFrom("deployments").select(META).where("id", "=", id));

export async function findDeployment(db: Db, id: string): Promise<DeploymentMeta | undefined> {
  return (await deploymentMeta(db, id))[0];
}

/** The bundle and its source map, read when a machine materialises the deployment. */
export async function findDeploymentBundle(db: Db, id: string): Promise<{ bundle: string | null; source_map: string | null } | undefined> {
  return db.selectFrom("deployments").select(["bundle", "source_map"]).where("id", "=", id).executeTakeFirst();
}

/** Rotation: deployments whose manifest is sealed under another key than `currentKeyId`. */
export async function manifestsSealedUnderOtherKeys(db: Db, currentKeyId: string, limit: number) {
  return db
    .selectFrom("deployments")
    .select(["id", "workspace_id", "worker_id", "manifest_key_id", "manifest_sealed"])
    .where("manifest_key_id", "is not", null)
    .where("manifest_key_id", "!=", currentKeyId)
    .limit(limit)
    .execute();
}

/** Compare-and-set on the key id: a manifest re-read with new secrets in between wins. */
export async function resealManifest(
  db: Db,
  id: string,
  previous: { keyId: string; sealed: Buffer },
  next: { keyId: string; sealed: Buffer },
): Promise<boolean> {
  const result = await db
    .updateTable("deployments")
    .set({ manifest_key_id: next.keyId, manifest_sealed: next.sealed })
    .where("id", "=", id)
    .where("manifest_key_id", "=", previous.keyId)
    .where("manifest_sealed", "=", previous.sealed)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

export async function finishDeployment(
  db: Db,
  id: string,
  fields: Pick<
    DeploymentRow,
    "status" | "finished_at" | "bundle" | "source_map" | "lockfile_hash" | "capabilities" | "manifest_key_id" | "manifest_sealed" | "manifest_secrets_version" | "build_log" | "error"
  >,
): Promise<void> {
  await db.updateTable("deployments").set(fields).where("id", "=", id).execute();
}

/**
 * Stores a manifest re-read with newer secrets; an older version never replaces a newer one
 * (another process may have re-read it meanwhile).
 */
export async function updateManifest(
  db: Db,
  id: string,
  next: { keyId: string; sealed: Buffer; secretsVersion: number; capabilities: string },
): Promise<boolean> {
  const result = await db
    .updateTable("deployments")
    .set({
      manifest_key_id: next.keyId,
      manifest_sealed: next.sealed,
      manifest_secrets_version: next.secretsVersion,
      capabilities: next.capabilities,
    })
    .where("id", "=", id)
    .where((eb) => eb.or([eb("manifest_secrets_version", "is", null), eb("manifest_secrets_version", "<", next.secretsVersion)]))
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

/** Deployments still marked building: left behind by a server that stopped mid-build. */
export async function failStaleBuilds(db: Db, olderThan: number, now: number): Promise<number> {
  const result = await db
    .updateTable("deployments")
    .set({ status: "failed", finished_at: now, error: "The build was interrupted (the server stopped)." })
    .where("status", "=", "building")
    .where("created_at", "<", olderThan)
    .executeTakeFirst();
  return Number(result.numUpdatedRows);
}
