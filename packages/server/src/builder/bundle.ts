import type { DeploymentRow } from "../store/schema.js";
import type { Keyring } from "../vault/keyring.js";
import { aad, openText, seal, type Sealed } from "../vault/seal.js";

/** A deployment's code as esbuild made it (build-entry.mts): one ESM file and its source map. */
export interface Bundle {
  code: string;
  sourceMap: string;
}

type Owner = Pick<DeploymentRow, "workspace_id" | "worker_id"> & { id: string };

/** The worker's code is the tenant's data: sealed like a secret before it is stored. */
export function sealBundle(keyring: Keyring, deployment: Owner, bundle: Bundle): Sealed {
  return seal(keyring, JSON.stringify(bundle), aad.bundle(deployment.workspace_id, deployment.worker_id, deployment.id));
}

/** The stored bundle: opened, or as rows from before 0.2 hold it in clear; undefined when none. */
export function openBundle(
  keyring: Keyring,
  deploymentId: string,
  row: Pick<DeploymentRow, "workspace_id" | "worker_id" | "bundle" | "source_map" | "bundle_key_id" | "bundle_sealed">,
): Bundle | undefined {
  if (row.bundle_key_id && row.bundle_sealed) {
    const text = openText(keyring, { keyId: row.bundle_key_id, sealed: row.bundle_sealed }, aad.bundle(row.workspace_id, row.worker_id, deploymentId));
    return JSON.parse(text) as Bundle;
  }
  if (row.bundle) return { code: row.bundle, sourceMap: row.source_map ?? "" };
  return undefined;
}
