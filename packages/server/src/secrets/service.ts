import crypto from "node:crypto";
import type { Kysely } from "kysely";
import type { Caller } from "../auth/tokens.js";
import { AppError } from "../errors.js";
import type { Database, SecretRow, WorkerRow } from "../store/schema.js";
import * as secretsStore from "../store/secrets.js";
import * as workersStore from "../store/workers.js";
import type { Keyring } from "../vault/keyring.js";
import { aad, openText, openWithKey, seal, sealWithKey } from "../vault/seal.js";
import type { ChangeFeed } from "../store/changes.js";
import { ReadCache } from "../store/read-cache.js";
import type { WorkerService } from "../workers/service.js";

/** What a POSIX shell and dotenv accept as a variable name. */
export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/**
 * The runtime's own variables: the access token of each OAuth capability. UpsertSecrets ignores
 * them (not refuses: the official CLI's `env push` sends every key of a pulled .env back).
 */
export const RESERVED_ENV_NAME = /^OAUTH_[0-9A-F]+_ACCESS_TOKEN$/;

/**
 * Names that configure what runs the worker rather than the worker itself: a secret named
 * NODE_OPTIONS could switch the permission model off, LD_PRELOAD load a library into the process.
 * Refused by UpsertSecrets, and left out of every worker process even when stored before this rule.
 * Each rule's reason is what the refusal says.
 */
const RESERVED_ENV_RULES: { matches: (name: string) => boolean; reason: string }[] = [
  // NODE_ENV is the exception: Node.js itself ignores it, and workers set it (the sandbox defaults it to production).
  { matches: (name) => name.startsWith("NODE_") && name !== "NODE_ENV", reason: "NODE_* variables configure the Node.js runtime that runs the worker" },
  { matches: (name) => name.startsWith("LD_"), reason: "LD_* variables configure the dynamic linker that loads the worker's runtime" },
  { matches: (name) => name.startsWith("UV_"), reason: "UV_* variables configure libuv, the I/O layer of the worker's runtime" },
  // npm reads npm_config_* in any case and sets lower-case npm_* itself; NPM_TOKEN stays usable.
  { matches: (name) => /^npm_config_/i.test(name) || name.startsWith("npm_"), reason: "npm_* variables configure npm, which installs the worker's dependencies" },
  { matches: (name) => name.startsWith("WORKYARD_"), reason: "WORKYARD_* variables configure the Workyard server" },
  { matches: (name) => name.startsWith("OPENSSL_"), reason: "OPENSSL_* variables make OpenSSL load other configuration and engines" },
  // The C library's own: modules and locale data it loads, allocator and resolver settings.
  {
    matches: (name) => ["GCONV_PATH", "LOCPATH", "NLSPATH", "GLIBC_TUNABLES", "HOSTALIASES", "RES_OPTIONS", "LOCALDOMAIN"].includes(name) || name.startsWith("MALLOC_"),
    reason: "it configures the C library under the worker's runtime (modules, locales, allocator or resolver)",
  },
];

/**
 * Why `name` may not be a worker's variable (a sentence naming it and the rule), or undefined when
 * it may. OAuth access token names are not refused here: see RESERVED_ENV_NAME.
 */
export function reservedEnvName(name: string): string | undefined {
  const rule = RESERVED_ENV_RULES.find((r) => r.matches(name));
  return rule ? `${name} is reserved: ${rule.reason}.` : undefined;
}

/** Why a stored variable is kept out of worker processes (and out of PullEnv), or undefined. */
function unusableReason(name: string, value: string): string | undefined {
  if (RESERVED_ENV_NAME.test(name)) return `${name} is the runtime's OAuth access token variable`;
  const reserved = reservedEnvName(name);
  if (reserved) return reserved.replace(/\.$/, "");
  if (value.includes("\0")) return `The value of ${name} contains a NUL byte, which no environment variable can hold`;
  return undefined;
}

/**
 * A worker process's environment without reserved names (reservedEnvName) and values holding a
 * NUL byte. For whoever builds that environment, as the last filter before the process starts
 * (the runtime's OAuth token variables pass).
 */
export function filterWorkerEnv(env: Record<string, string>): Record<string, string> {
  const out = variables();
  for (const [name, value] of Object.entries(env)) if (reservedEnvName(name) === undefined && !value.includes("\0")) out[name] = value;
  return out;
}

/**
 * An empty map of variables by name. Without a prototype: a variable may be named `__proto__` or
 * `constructor`, which a plain object would swallow or shadow.
 */
export function variables(): Record<string, string> {
  return Object.create(null) as Record<string, string>;
}

export const SECRET_LIMITS = { maxValueBytes: 64 * 1024, maxPerWorker: 500 };

/** A variable as UpsertSecrets takes it and PullEnv gives it (the wire's shape too: api/contract.ts). */
export interface EnvEntry {
  key: string;
  value: string;
  /** An OAuth access token's expiry (ISO), so `env pull` can note it in .env. */
  expiresAt?: string | null;
}

/** Why PullEnv left a stored variable out, or what to know about one it gave. */
export interface EnvNotice {
  key: string;
  message: string;
}

/** Adds runtime variables (OAuth access tokens) to what PullEnv returns. */
export type RuntimeEnvSource = (worker: WorkerRow, read: { refresh?: boolean }) => Promise<{ env: EnvEntry[]; notices: EnvNotice[] }>;

export interface SecretService {
  upsert(caller: Caller, workerId: string, entries: EnvEntry[]): Promise<{ updated: string[]; ignored: string[]; warnings: string[] }>;
  /** The worker's secret names and times, without their values. */
  list(caller: Caller, workerId: string): Promise<Pick<SecretRow, "name" | "created_at" | "updated_at">[]>;
  delete(caller: Caller, workerId: string, key: string): Promise<{ warnings: string[] }>;
  /**
   * Every secret a run gets, in clear, plus runtime variables (`env pull`); a notice names each
   * stored secret no run gets (a reserved name, a NUL byte) and how to remove it.
   * `read.refresh`: every OAuth token is refreshed first (`ntn workers env pull --refresh`).
   */
  pull(caller: Caller, workerId: string, read?: { refresh?: boolean }): Promise<{ env: EnvEntry[]; notices: EnvNotice[] }>;
  /**
   * The worker's secrets in clear as its processes may get them: rows stored before the rules
   * with a reserved name or a NUL byte are left out, and so are OAuth token names (the runtime sets
   * those). For the builder and the executor (no caller: trusted callers only).
   */
  runtimeSecretsOf(worker: WorkerRow): Promise<Record<string, string>>;
  /**
   * Every stored secret in clear, usable or not (e.g. to scrub their values from logs); never for
   * a process's environment: that is runtimeSecretsOf.
   */
  secretsOf(worker: WorkerRow): Promise<Record<string, string>>;
}

export function createSecretService(options: {
  db: Kysely<Database>;
  /** A worker's secrets version lives in its row, which server processes keep in memory (changes.ts). */
  changes: ChangeFeed;
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
  const { db, changes, keyring, workers } = options;
  const now = options.now ?? Date.now;

  // A worker's secrets by worker and secrets version (every change bumps the version and publishes
  // the worker's row), never kept in clear: sealed together as one value under a key that lives in
  // this process's memory only, so a read opens one value instead of one per secret.
  const processKey = crypto.randomBytes(32);
  const sealedSecrets = new ReadCache<{ workerId: string; sealed: Buffer }>(changes, "workers", (entry) => entry.workerId);

  /** Every stored secret in clear, usable or not. */
  async function storedSecretsOf(worker: WorkerRow): Promise<Record<string, string>> {
    const key = `${worker.id}@${worker.secrets_version}`;
    const bound = `secrets\0${key}`;
    const load = async () => {
      const out = variables();
      for (const row of await secretsStore.listSecrets(db, worker.id)) {
        out[row.name] = openText(keyring, { keyId: row.key_id, sealed: row.sealed }, aad.secret(row.workspace_id, row.worker_id, row.name));
      }
      return { workerId: worker.id, sealed: sealWithKey(processKey, JSON.stringify(out), bound) };
    };
    const kept = (await sealedSecrets.get(key, load))!;
    return Object.assign(variables(), JSON.parse(openWithKey(processKey, kept.sealed, bound).toString("utf8")) as Record<string, string>);
  }

  async function runtimeSecretsOf(worker: WorkerRow): Promise<Record<string, string>> {
    const out = variables();
    for (const [name, value] of Object.entries(await storedSecretsOf(worker))) if (unusableReason(name, value) === undefined) out[name] = value;
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
        const reserved = reservedEnvName(key);
        if (reserved) {
          throw new AppError("env_name_reserved", reserved, {
            hint: "Give the value another name (e.g. APP_" + key + ") and read that name in the worker.",
          });
        }
        if (Buffer.byteLength(value, "utf8") > SECRET_LIMITS.maxValueBytes) {
          throw new AppError("validation_error", `The value of ${key} is larger than ${SECRET_LIMITS.maxValueBytes / 1024} KiB.`);
        }
        // Never echoed: the message names the variable only.
        if (value.includes("\0")) {
          throw new AppError("env_value_invalid", `The value of ${key} contains a NUL byte, which no environment variable can hold.`, {
            hint: "Remove the NUL character (\\0) from the value and set it again.",
          });
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
        const version = await changes.transaction(db, async (trx, publish) => {
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
          publish({ table: "workers", id: worker.id });
          return workersStore.bumpSecretsVersion(trx, worker.id, at);
        });
        warnings = (await options.onChanged?.({ ...worker, secrets_version: version })) ?? [];
      }
      return { updated: [...accepted.keys()].sort(), ignored, warnings };
    },

    async list(caller, workerId) {
      const worker = await workers.get(caller, workerId);
      return secretsStore.listSecretNames(db, worker.id);
    },

    async delete(caller, workerId, key) {
      const worker = await workers.get(caller, workerId);
      const version = await changes.transaction(db, async (trx, publish) => {
        if (!(await secretsStore.deleteSecret(trx, worker.id, key))) {
          throw new AppError("secret_not_found", `Worker has no secret named ${JSON.stringify(key)}.`, {
            hint: "Run `ntn workers env list` to see its secrets.",
          });
        }
        publish({ table: "workers", id: worker.id });
        return workersStore.bumpSecretsVersion(trx, worker.id, now());
      });
      return { warnings: (await options.onChanged?.({ ...worker, secrets_version: version })) ?? [] };
    },

    async pull(caller, workerId, read = {}) {
      const worker = await workers.get(caller, workerId);
      const env: EnvEntry[] = [];
      const notices: EnvNotice[] = [];
      // What no run gets is not pulled either (a push of the pulled .env would be refused); a
      // notice says why and how to remove it.
      for (const [key, value] of Object.entries(await storedSecretsOf(worker))) {
        // The runtime's token variables come from the OAuth connections below, never from here.
        if (RESERVED_ENV_NAME.test(key)) continue;
        const unusable = unusableReason(key, value);
        if (unusable === undefined) env.push({ key, value });
        else notices.push({ key, message: `${unusable}; it is stored but no run gets it. Remove it with: ntn workers env unset ${key}` });
      }
      if (options.runtimeEnv) {
        const runtime = await options.runtimeEnv(worker, read);
        env.push(...runtime.env);
        notices.push(...runtime.notices);
      }
      return { env, notices };
    },

    runtimeSecretsOf,
    secretsOf: storedSecretsOf,
  };
}
