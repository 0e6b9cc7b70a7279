import type { ExecTarget, Executor } from "../executor/pool.js";

/*
 * Which secrets feed a worker's OAuth client ids and secrets, so configuration errors can name
 * them ("Check GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET: ntn workers env set ..."). The names
 * depend on the bundle's code only: every env name the bundle reads is set to a marker that
 * names it, the worker is loaded once more at build, and the markers found in its manifest's
 * clientId/clientSecret name the secrets. The deployment records the result (names, never values).
 */

const MARKER_PREFIX = "__workyard_probe_";
const MARKER = /__workyard_probe_(\w+)__/;

/** The env var names a bundle reads (process.env.NAME / process.env["NAME"]). */
export function referencedEnvNames(bundle: string): string[] {
  const names = new Set<string>();
  for (const match of bundle.matchAll(/process\.env(?:\.([A-Za-z_]\w*)|\[\s*["'`]([A-Za-z_]\w*)["'`]\s*\])/g)) names.add((match[1] ?? match[2])!);
  return [...names];
}

/** The variables to load a bundle with (over its secrets) to find its client secret names: each name read, set to its marker. */
export function clientSecretProbeEnv(bundle: string): Record<string, string> {
  return Object.fromEntries(referencedEnvNames(bundle).map((name) => [name, `${MARKER_PREFIX}${name}__`]));
}

/** Per OAuth capability of the manifest, the secret names behind its client id and secret. */
export interface ClientSecretNames {
  key: string;
  names: string[];
}

/**
 * From a manifest read with clientSecretProbeEnv over the secrets: for each OAuth capability,
 * the names whose markers its clientId and clientSecret hold, in that order. This is the fact a
 * build can record once, as plain data (names, never values).
 */
export function clientSecretNamesFrom(manifest: unknown): ClientSecretNames[] {
  const capabilities = (manifest as { capabilities?: { _tag: string; key: string; config?: Record<string, unknown> }[] } | undefined)?.capabilities ?? [];
  const found: ClientSecretNames[] = [];
  for (const capability of capabilities) {
    if (capability._tag !== "oauth") continue;
    const names: string[] = [];
    for (const field of ["clientId", "clientSecret"]) {
      const value = capability.config?.[field];
      const name = typeof value === "string" ? MARKER.exec(value)?.[1] : undefined;
      if (name && !names.includes(name)) names.push(name);
    }
    found.push({ key: capability.key, names });
  }
  return found;
}

/**
 * Loads the bundle once more with each env name it reads set to its marker (over the worker's
 * secrets) and reads the names off the manifest: [] when no OAuth capability reads any variable.
 */
export async function probeClientSecretNames(executor: Pick<Executor, "probe">, target: ExecTarget, bundleCode: string): Promise<ClientSecretNames[]> {
  const markers = clientSecretProbeEnv(bundleCode);
  if (Object.keys(markers).length === 0) return [];
  const manifest = await executor.probe({ ...target, secrets: async () => ({ ...(await target.secrets()), ...markers }) });
  return clientSecretNamesFrom(manifest);
}
