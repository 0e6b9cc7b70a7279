import type { BuildService } from "../builder/service.js";
import type { Executor } from "../executor/pool.js";
import type { WorkerRow } from "../store/schema.js";

/*
 * Which secrets feed a worker's OAuth client ids and secrets, so configuration errors can name
 * them ("Check GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET: ntn workers env set ..."). The names
 * depend on the bundle's code only: every env name the bundle reads is set to a marker that
 * names it, the worker is loaded, and the markers found in its manifest's clientId/clientSecret
 * name the secrets. Today that load happens on the error paths (probeClientSecretNames); the
 * pure parts below are what a build would need to record it once (see clientSecretNamesFrom).
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

/** The names for one capability key, or for all (each once, in manifest order). */
export function clientSecretNamesOf(found: ClientSecretNames[], key?: string): string[] {
  const names: string[] = [];
  for (const entry of found) {
    if (key && entry.key !== key) continue;
    for (const name of entry.names) if (!names.includes(name)) names.push(name);
  }
  return names;
}

/** Names the secrets to set, when they could be found; otherwise says what to look for. */
export function clientSecretsHint(names: string[]): string {
  if (names.length === 0) return "Set the client id and secret that src/index.ts reads: ntn workers env set NAME=value ...";
  return `Check ${names.join(" and ")}: ntn workers env set ${names.map((n) => `${n}=...`).join(" ")}`;
}

/**
 * The probe as it runs today, on error paths: loads the live deployment in a throwaway sandbox
 * with the markers over its secrets. Answers the names for `key` (or every OAuth capability).
 */
export function createClientSecretProbe(options: {
  builder: Pick<BuildService, "liveDeployment" | "liveBundle" | "execTarget">;
  executor: Pick<Executor, "probe">;
}): (worker: WorkerRow, key?: string) => Promise<string[]> {
  const { builder, executor } = options;
  return async (worker, key) => {
    const deployment = await builder.liveDeployment(worker);
    const bundle = await builder.liveBundle(worker);
    if (!deployment || !bundle) return [];
    const markers = clientSecretProbeEnv(bundle);
    if (Object.keys(markers).length === 0) return [];
    const target = await builder.execTarget(worker, deployment);
    const manifest = await executor.probe({ ...target, secrets: async () => ({ ...(await target.secrets()), ...markers }) });
    return clientSecretNamesOf(clientSecretNamesFrom(manifest), key);
  };
}
