import type { Kysely } from "kysely";
import type { Caller } from "../auth/tokens.js";
import { AppError } from "../errors.js";
import type { Database, WorkerRow } from "../store/schema.js";
import * as secretsStore from "../store/secrets.js";
import * as workersStore from "../store/workers.js";
import type { Keyring } from "../vault/keyring.js";
import { aad, openText, seal } from "../vault/seal.js";
import type { WorkerService } from "../workers/service.js";

/** What a POSIX shell and dotenv accept as a variable name. */
export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** The runtime's own variables: the access token of each OAuth capability. */
export const RESERVED_ENV_NAME = /^OAUTH_[0-9A-F]+_ACCESS_TOKEN$/;

export const SECRET_LIMITS = { maxValueBytes: 64 * 1024, maxPerWorker: 500 };

export interface EnvEntry {
  key: string;
  value: string;
}

export interface EnvNotice {
  key: string;
  message: string;
}

/** Adds runtime variables (OAuth access tokens) to what PullEnv returns. */
export type RuntimeEnvSource = (worker: WorkerRow) => Promise<{ env: EnvEntry[]; notices: EnvNotice[] }>;

export interface SecretService {
  upsert(caller: Caller, workerId: string, entries: EnvEntry[]): Promise<{ updated: string[]; ignored: string[]; warnings: string[] }>;
  list(caller: Caller, workerId: string): Promise<{ key: string; createdAt: string; updatedAt: string }[]>;
  delete(caller: Caller, workerId: string, key: string): Promise<{ warnings: string[] }>;
  /** Every secret in clear, plus runtime variables: for `env pull` and the executor. */
  pull(caller: Caller, workerId: string): Promise<{ env: EnvEntry[]; notices: EnvNotice[] }>;
  /** The worker's secrets in clear, for the builder and the executor (no caller: trusted callers only). */
  secretsOf(worker: WorkerRow): Promise<Record<string, string>>;
}

export function createSecretService(options: {
  db: Kysely<Database>;
  keyring: Keyring;
  workers: WorkerService;
  runtimeEnv?: RuntimeEnvSource;
  /**
   * Called after a worker's secrets changed (with the row as it is now): re-reads the live manifest
   * with the new values, so it may take a moment; what it returns is reported to the caller.
   */
  onChanged?: (worker: WorkerRow) => Promise<string[]>;
  now?: () => number;
}): SecretService {
  const { db, keyring, workers } = options;
  const now = options.now ?? Date.now;

  async function secretsOf(worker: WorkerRow): Promise<Record<string, string>> {
    const rows = await secretsStore.listSecrets(db, worker.id);
    const out: Record<string, string> = {};
    for (const row of rows) {
      out[row.name] = openText(keyring, { keyId: row.key_id, sealed: row.sealed }, aad.secret(row.workspace_id, row.worker_id, row.name));
    }
    return out;
  }

  return {
    async upsert(caller, workerId, entries) {
      const worker = await workers.get(caller, workerId);
      const ignored: string[] = [];
      const accepted = new Map<string, string>();
      // Validate everything first: a request with one bad name stores nothing.
      for (const { key, value } of entries) {
        if (!ENV_NAME.test(key)) {
          throw new AppError("env_name_invalid", `${JSON.stringify(key)} is not a valid environment variable name.`, {
            hint: "Names start with a letter or _ and hold only letters, digits and _ (e.g. GITHUB_CLIENT_ID).",
          });
        }
        if (Buffer.byteLength(value, "utf8") > SECRET_LIMITS.maxValueBytes) {
          throw new AppError("validation_error", `The value of ${key} is larger than ${SECRET_LIMITS.maxValueBytes / 1024} KiB.`);
        }
        if (RESERVED_ENV_NAME.test(key)) {
          ignored.push(key);
          continue;
        }
        accepted.set(key, value);
      }
      let warnings: string[] = [];
      if (accepted.size > 0) {
        const at = now();
        const version = await db.transaction().execute(async (trx) => {
          for (const [key, value] of accepted) {
            const sealed = seal(keyring, value, aad.secret(worker.workspace_id, worker.id, key));
            await secretsStore.upsertSecret(trx, {
              workspace_id: worker.workspace_id,
              worker_id: worker.id,
              name: key,
              key_id: sealed.keyId,
              sealed: sealed.sealed,
              created_at: at,
              updated_at: at,
            });
          }
          const names = await secretsStore.listSecretNames(trx, worker.id);
          if (names.length > SECRET_LIMITS.maxPerWorker) {
            throw new AppError("validation_error", `A worker holds at most ${SECRET_LIMITS.maxPerWorker} secrets.`);
          }
          return workersStore.bumpSecretsVersion(trx, worker.id, at);
        });
        warnings = (await options.onChanged?.({ ...worker, secrets_version: version })) ?? [];
      }
      return { updated: [...accepted.keys()].sort(), ignored, warnings };
    },

    async list(caller, workerId) {
      const worker = await workers.get(caller, workerId);
      const rows = await secretsStore.listSecretNames(db, worker.id);
      return rows.map((r) => ({
        key: r.name,
        createdAt: new Date(r.created_at).toISOString(),
        updatedAt: new Date(r.updated_at).toISOString(),
      }));
    },

    async delete(caller, workerId, key) {
      const worker = await workers.get(caller, workerId);
      const version = await db.transaction().execute(async (trx) => {
        if (!(await secretsStore.deleteSecret(trx, worker.id, key))) {
          throw new AppError("secret_not_found", `Worker has no secret named ${JSON.stringify(key)}.`, {
            hint: "Run `ntn workers env list` to see its secrets.",
          });
        }
        return workersStore.bumpSecretsVersion(trx, worker.id, now());
      });
      return { warnings: (await options.onChanged?.({ ...worker, secrets_version: version })) ?? [] };
    },

    async pull(caller, workerId) {
      const worker = await workers.get(caller, workerId);
      const secrets = await secretsOf(worker);
      const env: EnvEntry[] = Object.entries(secrets).map(([key, value]) => ({ key, value }));
      const notices: EnvNotice[] = [];
      if (options.runtimeEnv) {
        const runtime = await options.runtimeEnv(worker);
        env.push(...runtime.env);
        notices.push(...runtime.notices);
      }
      return { env, notices };
    },

    secretsOf,
  };
}
