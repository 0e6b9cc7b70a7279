import { probeClientSecretNames, type ClientSecretNames } from "../builder/client-secret-names.js";
import type { BuildService } from "../builder/service.js";
import type { Executor } from "../executor/pool.js";
import type { WorkerRow } from "../store/schema.js";

/*
 * The secrets to name in a configuration error: what the build recorded for the live deployment
 * (builder/client-secret-names.ts), or, for a deployment built before that record existed, the
 * same probe run now.
 */

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
 * The names for `key` (or every OAuth capability) of the worker's live deployment: as its build
 * recorded them, else (a deployment from before that record) probed now in a throwaway sandbox.
 */
export function createClientSecretProbe(options: {
  builder: Pick<BuildService, "liveDeployment" | "liveBundle" | "execTarget">;
  executor: Pick<Executor, "probe">;
}): (worker: WorkerRow, key?: string) => Promise<string[]> {
  const { builder, executor } = options;
  return async (worker, key) => {
    const deployment = await builder.liveDeployment(worker);
    if (!deployment) return [];
    if (deployment.client_secret_names !== null) return clientSecretNamesOf(JSON.parse(deployment.client_secret_names) as ClientSecretNames[], key);
    const bundle = await builder.liveBundle(worker);
    if (!bundle) return [];
    return clientSecretNamesOf(await probeClientSecretNames(executor, await builder.execTarget(worker, deployment), bundle), key);
  };
}
