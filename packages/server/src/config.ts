import os from "node:os";
import path from "node:path";
import ms from "ms";
import { LIMITS } from "./executor/limits.js";
import { PROVIDER_TIMEOUT_MS } from "./oauth/http.js";

/** What `ntn server` and tests pass in; every field optional. */
export interface ServerOptions {
  /** The environment the config reads: process.env unless given (our CLI run in-process gives its own). */
  env?: NodeJS.ProcessEnv;
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
  /** Maximum body of a webhook delivery, bytes (WORKYARD_WEBHOOK_BODY_LIMIT). */
  webhookBodyLimit?: number;
  /** Waits before a failed webhook delivery's retries, one per retry: `10s,1m,5m` (WORKYARD_WEBHOOK_RETRY_DELAYS). */
  webhookRetryDelays?: string;
  /** Finished webhook deliveries are deleted after this long (WORKYARD_WEBHOOK_RETENTION). */
  webhookRetention?: string | number;
  /** Webhook ingress per minute, per worker and per workspace: `600,1200` (WORKYARD_WEBHOOK_RATE). */
  webhookRate?: string;
  /** Webhook deliveries waiting to run past which new ones get 503, per workspace and in all: `2500,10000`; one number sets both (WORKYARD_WEBHOOK_MAX_QUEUED). */
  webhookMaxQueued?: string | number;
  /** Egress rules, HOST[:PORT] or CIDR: allowed despite the default deny (WORKYARD_EGRESS_ALLOW, comma separated). */
  egressAllow?: string[] | string;
  /** Egress rules denied on top of the defaults (WORKYARD_EGRESS_DENY). */
  egressDeny?: string[] | string;
  /** Extra CA certificates (PEM file) the egress gateway trusts for HTTPS upstreams (WORKYARD_EGRESS_CA_FILE). */
  egressCaFile?: string;
  /** The operator's HTTP proxy for outbound connections (WORKYARD_EGRESS_PROXY, else HTTPS_PROXY). */
  egressProxy?: string;
  /** `strict` refuses to start without namespaces, per-workspace uids and the gateway (WORKYARD_ISOLATION). */
  isolation?: string;
  /** Uids for workspaces when the server runs as root, `FIRST-LAST` (WORKYARD_WORKER_UIDS). */
  workerUids?: string;
  /** The npm registry builds install from (WORKYARD_NPM_REGISTRY, else npm_config_registry). */
  npmRegistry?: string;
  /** Runs and their logs are deleted after this long (WORKYARD_RUN_RETENTION). */
  runRetention?: string | number;
  /** Deployments kept per worker besides the live one (WORKYARD_DEPLOYMENTS_KEPT). */
  deploymentsKept?: number;
  /**
   * The clock every service reads (epoch ms): tests move it instead of sleeping until a token
   * expires. Not a flag; Date.now by default.
   */
  now?: () => number;
  /** Worker processes at once on this server (WORKYARD_MAX_PROCESSES). */
  maxProcesses?: number;
  /**
   * Warm processes per deployment and runs queued for one, beyond LIMITS' defaults. Not flags:
   * a test narrows them for its own server without touching the shared LIMITS.
   */
  processesPerDeployment?: number;
  queuedRunsPerDeployment?: number;
  /** CPU cores a worker process may use (WORKYARD_WORKER_CPU); enforced with a cgroup where possible. */
  workerCpu?: number;
  /** Runs one worker process takes at once (WORKYARD_RUNS_PER_PROCESS; 1: one at a time). */
  runsPerProcess?: number;
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
  webhookBodyLimit: number;
  webhookRetryDelaysMs: number[];
  webhookRetentionMs: number;
  webhookRate: { perWorker: number; perWorkspace: number };
  webhookMaxQueued: { perWorkspace: number; total: number };
  egressAllow: string[];
  egressDeny: string[];
  egressCaFile: string | undefined;
  /** An http:// proxy URL, taken by name from the environment unless given; NO_PROXY beside it. */
  egressProxy: string | undefined;
  noProxy: string | undefined;
  isolation: "strict" | "standard";
  workerUids: { first: number; last: number };
  npmRegistry: string;
  runRetentionMs: number;
  deploymentsKept: number;
  maxProcesses: number;
  processesPerDeployment: number;
  queuedRunsPerDeployment: number;
  workerCpu: number;
  runsPerProcess: number;
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_DATA_HOME || path.join(env.HOME || os.homedir(), ".local", "share");
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
  // A variable set to a number (an empty one is unset); what it holds is checked with the option.
  const envNumber = (name: string) => (env[name] ? Number(env[name]) : undefined);
  const port = options.port ?? envNumber("PORT") ?? 7777;
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
  const runMemoryMb = options.runMemoryMb ?? envNumber("WORKYARD_RUN_MEMORY_MB") ?? 256;
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
    providerTimeoutMs: parseDuration(options.providerTimeout ?? env.WORKYARD_PROVIDER_TIMEOUT ?? PROVIDER_TIMEOUT_MS, "--provider-timeout"),
    refreshKeepAliveMs: parseDuration(options.refreshKeepAlive ?? env.WORKYARD_REFRESH_KEEP_ALIVE ?? "7d", "--refresh-keep-alive"),
    maxConcurrentRequests: positiveInteger(
      options.maxConcurrentRequests ?? envNumber("WORKYARD_MAX_CONCURRENT_REQUESTS") ?? 4096,
      "--max-concurrent-requests",
    ),
    refreshConcurrency: positiveInteger(
      options.refreshConcurrency ?? envNumber("WORKYARD_REFRESH_CONCURRENCY") ?? 16,
      "--refresh-concurrency",
    ),
    bodyLimit: options.bodyLimit ?? 1024 * 1024,
    uploadLimit: options.uploadLimit ?? 50 * 1024 * 1024,
    webhookBodyLimit: positiveInteger(
      options.webhookBodyLimit ?? envNumber("WORKYARD_WEBHOOK_BODY_LIMIT") ?? 1024 * 1024,
      "WORKYARD_WEBHOOK_BODY_LIMIT",
    ),
    webhookRetentionMs: parseDuration(options.webhookRetention ?? env.WORKYARD_WEBHOOK_RETENTION ?? "7d", "WORKYARD_WEBHOOK_RETENTION"),
    webhookRate: ((rate) => ({ perWorker: rate[0], perWorkspace: rate[1] }))(
      positivePair(options.webhookRate ?? env.WORKYARD_WEBHOOK_RATE ?? "600,1200", "WORKYARD_WEBHOOK_RATE", "per worker and per workspace: 600,1200"),
    ),
    webhookMaxQueued: ((max) => ({ perWorkspace: max[0], total: max[1] }))(
      positivePair(String(options.webhookMaxQueued ?? env.WORKYARD_WEBHOOK_MAX_QUEUED ?? "2500,10000"), "WORKYARD_WEBHOOK_MAX_QUEUED", "per workspace and in all: 2500,10000", true),
    ),
    webhookRetryDelaysMs: list(options.webhookRetryDelays ?? env.WORKYARD_WEBHOOK_RETRY_DELAYS ?? "10s,1m,5m").map((d) => parseDuration(d, "WORKYARD_WEBHOOK_RETRY_DELAYS")),
    egressAllow: list(options.egressAllow ?? env.WORKYARD_EGRESS_ALLOW),
    egressDeny: list(options.egressDeny ?? env.WORKYARD_EGRESS_DENY),
    egressCaFile: options.egressCaFile ?? (env.WORKYARD_EGRESS_CA_FILE || undefined),
    egressProxy: options.egressProxy ?? (env.WORKYARD_EGRESS_PROXY || env.HTTPS_PROXY || env.https_proxy || undefined),
    noProxy: env.NO_PROXY ?? env.no_proxy,
    isolation: isolationMode(options.isolation ?? env.WORKYARD_ISOLATION),
    workerUids: uidRange(options.workerUids ?? env.WORKYARD_WORKER_UIDS ?? "200000-299999"),
    npmRegistry: registryUrl(options.npmRegistry ?? (env.WORKYARD_NPM_REGISTRY || env.npm_config_registry || env.NPM_CONFIG_REGISTRY || "https://registry.npmjs.org/")),
    runRetentionMs: parseDuration(options.runRetention ?? env.WORKYARD_RUN_RETENTION ?? "30d", "--run-retention"),
    deploymentsKept: nonNegativeInteger(
      options.deploymentsKept ?? envNumber("WORKYARD_DEPLOYMENTS_KEPT") ?? 10,
      "--deployments-kept",
    ),
    maxProcesses: positiveInteger(options.maxProcesses ?? envNumber("WORKYARD_MAX_PROCESSES") ?? 32, "--max-processes"),
    processesPerDeployment: positiveInteger(options.processesPerDeployment ?? LIMITS.processesPerDeployment, "processesPerDeployment"),
    queuedRunsPerDeployment: positiveInteger(options.queuedRunsPerDeployment ?? LIMITS.queuedRunsPerDeployment, "queuedRunsPerDeployment"),
    workerCpu: positiveNumber(options.workerCpu ?? envNumber("WORKYARD_WORKER_CPU") ?? 1, "--worker-cpu"),
    runsPerProcess: positiveInteger(
      options.runsPerProcess ?? envNumber("WORKYARD_RUNS_PER_PROCESS") ?? LIMITS.runsPerProcess,
      "--runs-per-process",
    ),
  };
}

/** `PER_WORKER,PER_WORKSPACE` requests per minute. */
/** Two positive integers, narrow then wide (`600,1200`); with `oneForBoth`, a single one sets both. */
function positivePair(value: string, name: string, what: string, oneForBoth = false): [number, number] {
  const parts = value.split(",").map((v) => Number(v.trim()));
  const pair = oneForBoth && parts.length === 1 ? [parts[0], parts[0]] : parts;
  if (pair.length !== 2 || !pair.every((n) => Number.isInteger(n) && n! >= 1)) {
    throw new ConfigError(`${name} must be two positive integers, ${what}; got ${JSON.stringify(value)}.`);
  }
  return [pair[0]!, pair[1]!];
}

/** A repeatable flag or a comma-separated variable, as a list of trimmed, non-empty entries. */
function list(value: string[] | string | undefined): string[] {
  if (value === undefined) return [];
  const items = Array.isArray(value) ? value.flatMap((v) => v.split(",")) : value.split(",");
  return items.map((v) => v.trim()).filter(Boolean);
}

function isolationMode(value: string | undefined): "strict" | "standard" {
  if (value === undefined || value === "" || value === "standard") return "standard";
  if (value === "strict") return "strict";
  throw new ConfigError(`--isolation must be strict or standard; got ${JSON.stringify(value)}.`);
}

function uidRange(value: string): { first: number; last: number } {
  const match = /^(\d+)-(\d+)$/.exec(value.trim());
  const first = Number(match?.[1]);
  const last = Number(match?.[2]);
  if (!match || first < 1000 || last < first || last > 4_294_967_294) {
    throw new ConfigError(`--worker-uids must be a range FIRST-LAST of unused uids (at least 1000), such as 200000-299999; got ${JSON.stringify(value)}.`);
  }
  return { first, last };
}

function registryUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(`--npm-registry must be an http(s) URL; got ${JSON.stringify(value)}.`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") throw new ConfigError(`--npm-registry must be an http(s) URL; got ${JSON.stringify(value)}.`);
  if (url.username || url.password) throw new ConfigError("--npm-registry must not carry credentials.");
  return url.href.endsWith("/") ? url.href : `${url.href}/`;
}

function nonNegativeInteger(value: number, flag: string): number {
  if (!Number.isInteger(value) || value < 0) throw new ConfigError(`${flag} must be an integer of at least 0; got ${JSON.stringify(value)}.`);
  return value;
}

function positiveNumber(value: number, flag: string): number {
  if (!Number.isFinite(value) || value <= 0) throw new ConfigError(`${flag} must be a positive number; got ${JSON.stringify(value)}.`);
  return value;
}

/** `http://H:P` for the bound address; a wildcard host is reached through loopback. */
export function urlForAddress(host: string, port: number): string {
  let h = host;
  if (h === "0.0.0.0" || h === "") h = "127.0.0.1";
  if (h === "::") h = "::1";
  if (h.includes(":")) h = `[${h}]`;
  return `http://${h}:${port}`;
}
