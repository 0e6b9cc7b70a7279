import type { DeploymentRow } from "../store/schema.js";
import type { Keyring } from "../vault/keyring.js";
import { aad, openText, seal } from "../vault/seal.js";

/** The parts of the SDK's `worker.manifest` the server reads. */
export interface WorkerManifest {
  sdkVersion?: string;
  capabilities: { _tag: string; key: string; config?: Record<string, unknown> }[];
  [other: string]: unknown;
}

export interface CapabilitySummary {
  _tag: string;
  key: string;
}

/**
 * A deployment's capabilities (tags and keys, the `capabilities` column), parsed once per row
 * object as the caches hold it, not on every run that reads them. Frozen: callers share it.
 */
export function capabilitiesOf(deployment: Pick<DeploymentRow, "capabilities"> | undefined): readonly CapabilitySummary[] {
  const source = deployment?.capabilities;
  if (!source) return NO_CAPABILITIES;
  const hit = parsedCapabilities.get(deployment);
  if (hit && hit.source === source) return hit.parsed;
  const parsed = Object.freeze((JSON.parse(source) as CapabilitySummary[]).map((c) => Object.freeze(c)));
  parsedCapabilities.set(deployment, { source, parsed });
  return parsed;
}
const NO_CAPABILITIES: readonly CapabilitySummary[] = Object.freeze([]);
const parsedCapabilities = new WeakMap<object, { source: string; parsed: readonly CapabilitySummary[] }>();

export class ManifestError extends Error {}

/** Checks what a loaded bundle reported; a worker with no manifest shape fails the build. */
export function asManifest(value: unknown): WorkerManifest {
  const manifest = value as WorkerManifest | null;
  if (!manifest || typeof manifest !== "object" || !Array.isArray(manifest.capabilities)) {
    throw new ManifestError("The default export has no manifest: is it a Worker from @notionhq/workers?");
  }
  for (const capability of manifest.capabilities) {
    if (typeof capability?._tag !== "string" || typeof capability.key !== "string") {
      throw new ManifestError("The worker's manifest lists a capability without a _tag and key.");
    }
  }
  return manifest;
}

/** Tags and keys only: what listings show, kept in clear. The configurations stay sealed. */
export function summarise(manifest: WorkerManifest): CapabilitySummary[] {
  return manifest.capabilities.map((c) => ({ _tag: c._tag, key: c.key }));
}

/** The manifest holds OAuth client secrets in clear: it is sealed like a secret. */
export function sealManifest(keyring: Keyring, deployment: Pick<DeploymentRow, "id" | "workspace_id" | "worker_id">, manifest: WorkerManifest) {
  return seal(keyring, JSON.stringify(manifest), aad.manifest(deployment.workspace_id, deployment.worker_id, deployment.id));
}

export function openManifest(
  keyring: Keyring,
  deployment: Pick<DeploymentRow, "id" | "workspace_id" | "worker_id" | "manifest_key_id" | "manifest_sealed">,
): WorkerManifest | undefined {
  if (!deployment.manifest_key_id || !deployment.manifest_sealed) return undefined;
  const text = openText(
    keyring,
    { keyId: deployment.manifest_key_id, sealed: deployment.manifest_sealed },
    aad.manifest(deployment.workspace_id, deployment.worker_id, deployment.id),
  );
  return JSON.parse(text) as WorkerManifest;
}
