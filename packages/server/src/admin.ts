import path from "node:path";
import type { Kysely } from "kysely";
import type { Database } from "./store/schema.js";
import type { Keyring } from "./vault/keyring.js";
import { createTokenService } from "./auth/tokens.js";
import { resolveConfig } from "./config.js";
import { missingKeyError, openPlatform } from "./platform.js";
import { generateKey } from "./vault/keyring.js";
import { keyIdsInUse, resealAll } from "./vault/rotate.js";
import type { ChangeFeed } from "./store/changes.js";
import { createWorkspace, writeTokenFile } from "./workspaces/service.js";

/**
 * Offline admin commands: they open the store and keyring as a server does (same data dir,
 * DATABASE_URL and WORKYARD_MASTER_KEY) and work while servers keep serving. They never create a
 * master key file: a command that needs the key and finds none says which one to provide.
 */

export interface RotationResult {
  keyId: string;
  resealed: Record<string, number>;
  source: "env" | "file";
  keyFile: string | undefined;
  removedKeyIds: string[];
}

/** The running server's key rotation, for the RotateKey action. */
export interface KeyService {
  rotate(options?: { keepOldKeys?: boolean }): Promise<RotationResult>;
}

export function createKeyService(db: Kysely<Database>, changes: ChangeFeed, keyring: Keyring): KeyService {
  return { rotate: (options = {}) => rotateKeys(db, changes, keyring, options) };
}

/** How long running servers take at most to notice a new key file (keyring.ts checks once a second). */
const KEY_PICKUP_MS = 2000;

/**
 * Rotation itself, for the offline command and the RotateKey action alike: with a key file, a new
 * key goes first in it (and running servers get time to pick it up); then every value is re-sealed
 * under the current key, and keys nothing uses any more leave the file.
 */
export async function rotateKeys(
  db: Kysely<Database>,
  changes: ChangeFeed,
  keyring: Keyring,
  options: { keepOldKeys?: boolean; onProgress?: (line: string) => void } = {},
): Promise<RotationResult> {
  if (keyring.source === "file") {
    const fresh = keyring.prependToFile(generateKey());
    options.onProgress?.(`New master key ${fresh.id} added to ${keyring.file}; waiting for running servers to pick it up...`);
    // From here on, running servers seal new values under the new key.
    await new Promise((resolve) => setTimeout(resolve, KEY_PICKUP_MS));
  }
  const report = await resealAll(db, keyring);
  // What processes keep in memory (deployments' manifests, workers' secrets) was sealed before.
  await changes.transaction(db, async (_trx, publish) => publish({ table: "deployments" }, { table: "workers" }));
  let removedKeyIds: string[] = [];
  if (keyring.source === "file" && !options.keepOldKeys) {
    const inUse = new Set(await keyIdsInUse(db));
    inUse.add(report.keyId);
    removedKeyIds = keyring.ids().filter((id) => !inUse.has(id));
    keyring.retainInFile([...inUse]);
  }
  return { ...report, source: keyring.source, keyFile: keyring.file, removedKeyIds };
}

export async function rotateMasterKey(options: {
  dataDir?: string | undefined;
  keepOldKeys?: boolean;
  onProgress?: (line: string) => void;
  env?: NodeJS.ProcessEnv;
}): Promise<RotationResult> {
  const config = resolveConfig({ dataDir: options.dataDir }, options.env);
  const { store, keyring } = await openPlatform(config, { createKey: false });
  try {
    if (!keyring) throw missingKeyError(config, "Rotating the master key");
    return await rotateKeys(store.db, store.changes, keyring, options);
  } finally {
    await store.close();
  }
}

export async function createWorkspaceOffline(options: {
  dataDir?: string | undefined;
  name: string;
  tokenFile?: string | undefined;
  env?: NodeJS.ProcessEnv;
}): Promise<{ workspaceId: string; name: string; tokenFile: string }> {
  const config = resolveConfig({ dataDir: options.dataDir }, options.env);
  // No key needed: tokens are stored as hashes, nothing is sealed.
  const { store } = await openPlatform(config, { createKey: false });
  try {
    const { workspace, token } = await createWorkspace(store.db, createTokenService(store.db, store.changes), options.name);
    const tokenFile = path.resolve(options.tokenFile ?? path.join(config.dataDir, "workspaces", `${workspace.id}.token`));
    writeTokenFile(tokenFile, token);
    return { workspaceId: workspace.id, name: workspace.name, tokenFile };
  } finally {
    await store.close();
  }
}
