import fs from "node:fs";
import path from "node:path";
import type { Config } from "./config.js";
import { openStore, type Store } from "./store/db.js";
import { migrateToLatest } from "./store/migrate.js";
import { Keyring, KeyringError } from "./vault/keyring.js";
import { keyIdsInUse } from "./vault/rotate.js";

/**
 * Opens the store and the keyring as a server needs them: used by `ntn server` and by the
 * offline admin commands (`rotate-key`, `workspace create`), which work beside running servers.
 */
export async function openPlatform(config: Config): Promise<{ store: Store; keyring: Keyring }> {
  fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const store = await openStore(config);
  try {
    await migrateToLatest(store.db, store.dialect);
    const inUse = await keyIdsInUse(store.db);
    const keyring = loadKeyring(config, inUse.length > 0);
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

function loadKeyring(config: Config, storeHasSealedData: boolean): Keyring {
  if (config.masterKeys) return Keyring.fromEnv(config.masterKeys);
  const file = path.join(config.dataDir, "master.key");
  if (fs.existsSync(file)) return Keyring.fromFile(file);
  // A shared PostgreSQL with data: a fresh key here could only make this server unable to read it.
  if (config.databaseUrl && storeHasSealedData) {
    throw new KeyringError(
      `No master key: set WORKYARD_MASTER_KEY to the key of the servers that share this database (or copy their master.key to ${file}).`,
    );
  }
  return Keyring.createFile(file);
}

