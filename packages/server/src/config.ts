import os from "node:os";
import path from "node:path";
import ms from "ms";

/** What `ntn server` and tests pass in; every field optional. */
export interface ServerOptions {
  host?: string;
  port?: number;
  dataDir?: string;
  publicUrl?: string;
  databaseUrl?: string;
  /** Base64 master keys, newest first (WORKYARD_MASTER_KEY, comma separated). */
  masterKeys?: string;
  runTimeout?: string | number;
  runMemoryMb?: number;
  backgroundRefresh?: boolean;
  allowInsecureOauth?: boolean;
  logLevel?: string;
  /** Where logs go; defaults to stderr. Tests pass a stream to capture them. */
  logStream?: NodeJS.WritableStream;
  /** How long a token endpoint gets to answer (the refresh lease lasts three times as long). */
  providerTimeout?: string | number;
  /** A refresh token unused this long is refreshed anyway (providers expire idle ones). */
  refreshKeepAlive?: string | number;
  /** Requests handled at once; beyond, the API answers 503 with Retry-After. */
  maxConcurrentRequests?: number;
  /** Background refreshes at once (per server process). */
  refreshConcurrency?: number;
  /** Extra OAuth provider quirks (a YAML file in the catalog's format); WORKYARD_PROVIDER_CATALOG. */
  providerCatalog?: string;
  /** Maximum JSON body of an action, bytes. */
  bodyLimit?: number;
  /** Maximum uploaded source archive, bytes. */
  uploadLimit?: number;
}

export interface Config {
  host: string;
  port: number;
  dataDir: string;
  /** Fixed by --public-url; otherwise computed from the bound address once listening. */
  publicUrl: string | undefined;
  databaseUrl: string | undefined;
  masterKeys: string | undefined;
  runTimeoutMs: number;
  runMemoryMb: number;
  backgroundRefresh: boolean;
  allowInsecureOauth: boolean;
  logLevel: string;
  logStream: NodeJS.WritableStream;
  providerCatalog: string | undefined;
  providerTimeoutMs: number;
  refreshKeepAliveMs: number;
  maxConcurrentRequests: number;
  refreshConcurrency: number;
  bodyLimit: number;
  uploadLimit: number;
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_DATA_HOME || path.join(os.homedir(), ".local", "share");
  return path.join(base, "workyard");
}

function parseDuration(value: string | number, flag: string): number {
  if (typeof value === "number") return value;
  const parsed = /^\d+$/.test(value) ? Number(value) * 1000 : ms(value as ms.StringValue);
  if (typeof parsed !== "number" || !Number.isFinite(parsed) || parsed <= 0) {
    throw new ConfigError(`${flag} must be a duration such as 30s, 2m or 60 (seconds); got ${JSON.stringify(value)}.`);
  }
  return parsed;
}

function positiveInteger(value: number, flag: string): number {
  if (!Number.isInteger(value) || value < 1) throw new ConfigError(`${flag} must be a positive integer; got ${JSON.stringify(value)}.`);
  return value;
}

/** Flags and environment to one validated Config; the only place that reads process.env. */
export function resolveConfig(options: ServerOptions = {}, env: NodeJS.ProcessEnv = process.env): Config {
  const port = options.port ?? (env.PORT ? Number(env.PORT) : 7777);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new ConfigError(`--port must be an integer from 0 to 65535; got ${JSON.stringify(options.port ?? env.PORT)}.`);
  }
  let publicUrl = options.publicUrl ?? env.WORKYARD_PUBLIC_URL;
  if (publicUrl !== undefined) {
    let parsed: URL;
    try {
      parsed = new URL(publicUrl);
    } catch {
      throw new ConfigError(`--public-url must be an absolute http(s) URL; got ${JSON.stringify(publicUrl)}.`);
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
      throw new ConfigError(`--public-url must use http or https; got ${JSON.stringify(publicUrl)}.`);
    }
    if (parsed.search || parsed.hash) {
      throw new ConfigError("--public-url must not carry a query string or fragment.");
    }
    // No trailing slash: the official CLI appends /workers/oauth/callback to the base as it is.
    publicUrl = parsed.toString().replace(/\/+$/, "");
  }
  const runMemoryMb = options.runMemoryMb ?? (env.WORKYARD_RUN_MEMORY_MB ? Number(env.WORKYARD_RUN_MEMORY_MB) : 256);
  if (!Number.isInteger(runMemoryMb) || runMemoryMb < 32) {
    throw new ConfigError(`--run-memory-mb must be an integer of at least 32; got ${JSON.stringify(runMemoryMb)}.`);
  }
  return {
    host: options.host ?? env.HOST ?? "127.0.0.1",
    port,
    dataDir: path.resolve(options.dataDir ?? env.WORKYARD_DATA_DIR ?? defaultDataDir(env)),
    publicUrl,
    databaseUrl: options.databaseUrl ?? (env.DATABASE_URL || undefined),
    masterKeys: options.masterKeys ?? (env.WORKYARD_MASTER_KEY || undefined),
    runTimeoutMs: parseDuration(options.runTimeout ?? env.WORKYARD_RUN_TIMEOUT ?? "60s", "--run-timeout"),
    runMemoryMb,
    backgroundRefresh: options.backgroundRefresh ?? env.WORKYARD_BACKGROUND_REFRESH !== "0",
    allowInsecureOauth: options.allowInsecureOauth ?? env.WORKYARD_ALLOW_INSECURE_OAUTH === "1",
    logLevel: options.logLevel ?? env.WORKYARD_LOG_LEVEL ?? "info",
    logStream: options.logStream ?? process.stderr,
    providerCatalog: options.providerCatalog ?? (env.WORKYARD_PROVIDER_CATALOG || undefined),
    providerTimeoutMs: parseDuration(options.providerTimeout ?? env.WORKYARD_PROVIDER_TIMEOUT ?? "10s", "--provider-timeout"),
    refreshKeepAliveMs: parseDuration(options.refreshKeepAlive ?? env.WORKYARD_REFRESH_KEEP_ALIVE ?? "7d", "--refresh-keep-alive"),
    maxConcurrentRequests: positiveInteger(
      options.maxConcurrentRequests ?? (env.WORKYARD_MAX_CONCURRENT_REQUESTS ? Number(env.WORKYARD_MAX_CONCURRENT_REQUESTS) : 4096),
      "--max-concurrent-requests",
    ),
    refreshConcurrency: positiveInteger(
      options.refreshConcurrency ?? (env.WORKYARD_REFRESH_CONCURRENCY ? Number(env.WORKYARD_REFRESH_CONCURRENCY) : 16),
      "--refresh-concurrency",
    ),
    bodyLimit: options.bodyLimit ?? 1024 * 1024,
    uploadLimit: options.uploadLimit ?? 50 * 1024 * 1024,
  };
}

/** `http://H:P` for the bound address; a wildcard host is reached through loopback. */
export function urlForAddress(host: string, port: number): string {
  let h = host;
  if (h === "0.0.0.0" || h === "") h = "127.0.0.1";
  if (h === "::") h = "::1";
  if (h.includes(":")) h = `[${h}]`;
  return `http://${h}:${port}`;
}
