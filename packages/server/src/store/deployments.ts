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
  "client_secret_names",
  "error",
] as const;

const deploymentMeta = prepared((db: Db, p: { id: string }) => db.selectFrom("deployments").select(META).where("id", "=", p.id));

export async function findDeployment(db: Db, id: string): Promise<DeploymentMeta | undefined> {
  return (await deploymentMeta(db, { id }))[0];
}

/** The bundle (sealed; in clear on rows from before 0.2), read when a machine materialises the deployment. */
export async function findDeploymentBundle(
  db: Db,
  id: string,
): Promise<Pick<DeploymentRow, "workspace_id" | "worker_id" | "bundle" | "source_map" | "bundle_key_id" | "bundle_sealed"> | undefined> {
  return db
    .selectFrom("deployments")
    .select(["workspace_id", "worker_id", "bundle", "source_map", "bundle_key_id", "bundle_sealed"])
    .where("id", "=", id)
    .executeTakeFirst();
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

/** How many deployments a worker has (built, failed or building). */
export async function countDeployments(db: Db, workerId: string): Promise<number> {
  const row = await db.selectFrom("deployments").select((eb) => eb.fn.countAll<number>().as("n")).where("worker_id", "=", workerId).executeTakeFirstOrThrow();
  return Number(row.n);
}

/** Rotation: bundles sealed under another key, and bundles of rows from before 0.2 still in clear. */
export async function bundlesSealedUnderOtherKeys(db: Db, currentKeyId: string, limit: number) {
  return db
    .selectFrom("deployments")
    .select(["id", "workspace_id", "worker_id", "bundle", "source_map", "bundle_key_id", "bundle_sealed"])
    .where((eb) =>
      eb.or([
        eb.and([eb("bundle_key_id", "is not", null), eb("bundle_key_id", "!=", currentKeyId)]),
        eb.and([eb("bundle_key_id", "is", null), eb("bundle", "is not", null)]),
      ]),
    )
    .limit(limit)
    .execute();
}

/** Stores a re-sealed bundle if the row still holds what was read (its key id, or clear). */
export async function resealBundle(db: Db, id: string, previousKeyId: string | null, next: { keyId: string; sealed: Buffer }): Promise<boolean> {
  const result = await db
    .updateTable("deployments")
    .set({ bundle_key_id: next.keyId, bundle_sealed: next.sealed, bundle: null, source_map: null })
    .where("id", "=", id)
    .where((eb) => (previousKeyId === null ? eb("bundle_key_id", "is", null) : eb("bundle_key_id", "=", previousKeyId)))
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
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
    | "status"
    | "finished_at"
    | "bundle_key_id"
    | "bundle_sealed"
    | "lockfile_hash"
    | "capabilities"
    | "manifest_key_id"
    | "manifest_sealed"
    | "manifest_secrets_version"
    | "client_secret_names"
    | "build_log"
    | "error"
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

/**
 * Retention: per worker, the deployments beyond the newest `kept` (by created_at) among those that
 * are neither live nor building. A worker whose live deployment went live at or after
 * `settledBefore` is left alone until then: a run that started on the previous one may still be
 * going (runs only start on the live deployment, and none outlives its time limit). At most `limit`.
 */
export async function deploymentsBeyondKept(db: Db, kept: number, settledBefore: number, limit: number): Promise<{ id: string; worker_id: string }[]> {
  const ranked = db
    .selectFrom("deployments as d")
    .innerJoin("workers as w", "w.id", "d.worker_id")
    .leftJoin("deployments as live", "live.id", "w.live_deployment_id")
    .select((eb) => [
      "d.id as id",
      "d.worker_id as worker_id",
      eb.fn
        .agg<number>("row_number")
        .over((ob) => ob.partitionBy("d.worker_id").orderBy("d.created_at", "desc").orderBy("d.id", "desc"))
        .as("position"),
    ])
    .where("d.status", "!=", "building")
    .where((eb) => eb.or([eb("w.live_deployment_id", "is", null), eb("d.id", "!=", eb.ref("w.live_deployment_id"))]))
    .where((eb) => eb.or([eb("live.id", "is", null), eb("live.finished_at", "is", null), eb("live.finished_at", "<", settledBefore)]));
  return db.selectFrom(ranked.as("ranked")).select(["id", "worker_id"]).where("position", ">", kept).orderBy("id").limit(limit).execute();
}

/**
 * Deletes these deployments, checking again in the same statement that none is live or building
 * (a build may have finished since they were chosen). Answers the ids actually deleted.
 */
export async function deleteDeployments(db: Db, ids: string[]): Promise<string[]> {
  if (ids.length === 0) return [];
  const rows = await db
    .deleteFrom("deployments")
    .where("id", "in", ids)
    .where("status", "!=", "building")
    .where("id", "not in", (eb) => eb.selectFrom("workers").select("live_deployment_id").where("live_deployment_id", "is not", null).$narrowType<{ live_deployment_id: string }>())
    .returning("id")
    .execute();
  return rows.map((r) => r.id);
}

/** Which of these deployment ids still exist (for the folders a machine has materialised). */
export async function existingDeploymentIds(db: Db, ids: string[]): Promise<Set<string>> {
  const found = new Set<string>();
  for (let i = 0; i < ids.length; i += 500) {
    const rows = await db.selectFrom("deployments").select("id").where("id", "in", ids.slice(i, i + 500)).execute();
    for (const row of rows) found.add(row.id);
  }
  return found;
}

/**
 * What the installed-tree collector must keep: the lockfile hash of every deployment there is,
 * and whether any build is under way (its hash is only recorded when it finishes).
 */
export async function installedTreesInUse(db: Db): Promise<{ hashes: Set<string>; building: boolean }> {
  // Building first: a build that finishes between the two reads then shows in the hashes.
  const building = await db.selectFrom("deployments").select("id").where("status", "=", "building").limit(1).executeTakeFirst();
  const rows = await db.selectFrom("deployments").select("lockfile_hash").distinct().where("lockfile_hash", "is not", null).execute();
  return { hashes: new Set(rows.map((r) => r.lockfile_hash!)), building: building !== undefined };
}
