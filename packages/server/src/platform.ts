import fs from "node:fs";
import path from "node:path";
import { ConfigError, type Config } from "./config.js";
import { openStore, type Store } from "./store/db.js";
import { migrateToLatest } from "./store/migrate.js";
import { Keyring, KeyringError } from "./vault/keyring.js";
import { keyIdsInUse } from "./vault/rotate.js";

/**
 * Opens the store and the keyring as a server needs them: used by `ntn server` and by the
 * offline admin commands (`rotate-key`, `workspace create`), which work beside running servers.
 *
 * A server creates `<dataDir>/master.key` when it finds no key. The offline commands pass
 * `createKey: false`: they never write a key file (a stray one beside a server that uses
 * WORKYARD_MASTER_KEY would be a second, unused secret on disk); without a key they get no
 * keyring, and a command that must read or seal data says which key to provide (missingKeyError).
 */
export async function openPlatform(config: Config): Promise<{ store: Store; keyring: Keyring }>;
export async function openPlatform(config: Config, options: { createKey: false }): Promise<{ store: Store; keyring: Keyring | undefined }>;
export async function openPlatform(config: Config, options: { createKey?: boolean } = {}): Promise<{ store: Store; keyring: Keyring | undefined }> {
  const createKey = options.createKey ?? true;
  // The offline commands do not create the data dir either: a mistyped --data-dir fails plainly.
  if (createKey) fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  else if (!config.databaseUrl && !fs.existsSync(config.dataDir)) {
    throw new ConfigError(`No data dir at ${config.dataDir}: start the server once (ntn server --data-dir ${config.dataDir}), or pass the data dir it uses with --data-dir.`);
  }
  const store = await openStore(config);
  try {
    await migrateToLatest(store.db, store.dialect);
    const inUse = await keyIdsInUse(store.db);
    const keyring = createKey ? loadKeyring(config, inUse.length > 0) : existingKeyring(config);
    if (!keyring) return { store, keyring };
    const missing = inUse.filter((id) => !keyring.get(id));
    if (missing.length > 0) {
      throw new KeyringError(
        `The store holds data sealed under master key ${missing.join(", ")}, which this server does not have. ` +
          `Start it with the same WORKYARD_MASTER_KEY (or ${path.join(config.dataDir, "master.key")}) as the servers that wrote it.`,
      );
    }
    return { store, keyring };
  } catch (error) {
    await store.close();
    throw error;
  }
}

/** The keys given (WORKYARD_MASTER_KEY) or in `<dataDir>/master.key`; undefined when there are none. */
function existingKeyring(config: Config): Keyring | undefined {
  if (config.masterKeys) return Keyring.fromEnv(config.masterKeys);
  const file = path.join(config.dataDir, "master.key");
  return fs.existsSync(file) ? Keyring.fromFile(file) : undefined;
}

/** For an offline command that needs the master key and found none (openPlatform with createKey false). */
export function missingKeyError(config: Config, what: string): KeyringError {
  return new KeyringError(
    `${what} needs the master key, and there is none here: set WORKYARD_MASTER_KEY as the servers have it, ` +
      `or pass the --data-dir whose master.key they use (looked for ${path.join(config.dataDir, "master.key")}).`,
  );
}

function loadKeyring(config: Config, storeHasSealedData: boolean): Keyring {
  const existing = existingKeyring(config);
  if (existing) return existing;
  const file = path.join(config.dataDir, "master.key");
  // A shared PostgreSQL with data: a fresh key here could only make this server unable to read it.
  if (config.databaseUrl && storeHasSealedData) {
    throw new KeyringError(
      `No master key: set WORKYARD_MASTER_KEY to the key of the servers that share this database (or copy their master.key to ${file}).`,
    );
  }
  return Keyring.createFile(file);
}

