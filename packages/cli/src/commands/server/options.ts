import path from "node:path";
import type { OptionSpec } from "../../define-command.js";
import { UserError } from "../../errors.js";

/** Where a server keeps its data: shared by `ntn server` and its offline admin subcommands. */
export const STORE_OPTIONS: OptionSpec[] = [
  { flags: "--data-dir <DIR>", description: "Data directory (default: $XDG_DATA_HOME/workyard); DATABASE_URL selects PostgreSQL" },
];

/** `ntn server`'s flags, each naming the variable that sets it when the flag is not given. */
export const SERVER_OPTIONS: OptionSpec[] = [
  { flags: "--host <HOST>", description: "Address to listen on (HOST; default 127.0.0.1)" },
  { flags: "--port <PORT>", description: "Port to listen on, 0 picks a free port (PORT; default 7777)" },
  ...STORE_OPTIONS,
  { flags: "--public-url <URL>", description: "Base URL users and OAuth providers reach this server by (WORKYARD_PUBLIC_URL; default http://HOST:PORT)" },
  { flags: "--run-timeout <DURATION>", description: "Time limit of a run, e.g. 60s or 5m (WORKYARD_RUN_TIMEOUT; default 60s)" },
  { flags: "--run-memory-mb <MB>", description: "Heap limit of a worker process, in MiB (WORKYARD_RUN_MEMORY_MB; default 256)" },
  { flags: "--no-background-refresh", description: "Refresh OAuth tokens only when a request needs them (WORKYARD_BACKGROUND_REFRESH=0)" },
  { flags: "--allow-insecure-oauth", description: "Allow plain-http OAuth endpoints that are not on loopback (WORKYARD_ALLOW_INSECURE_OAUTH=1)" },
  { flags: "--provider-catalog <FILE>", description: "Extra OAuth provider quirks, a YAML file in the catalog's format (WORKYARD_PROVIDER_CATALOG)" },
  { flags: "--provider-timeout <DURATION>", description: "How long an OAuth token endpoint gets to answer (WORKYARD_PROVIDER_TIMEOUT; default 10s)" },
  { flags: "--refresh-keep-alive <DURATION>", description: "Refresh a refresh token left unused this long (WORKYARD_REFRESH_KEEP_ALIVE; default 7d)" },
  { flags: "--refresh-concurrency <N>", description: "Background token refreshes at once (WORKYARD_REFRESH_CONCURRENCY; default 16)" },
  { flags: "--max-concurrent-requests <N>", description: "Requests handled at once; beyond, 503 with Retry-After (WORKYARD_MAX_CONCURRENT_REQUESTS; default 4096)" },
  { flags: "--isolation <MODE>", description: "strict: refuse to start unless workers get namespaces, their own uids and the egress gateway (WORKYARD_ISOLATION; default standard)" },
  { flags: "--egress-allow <RULE>", description: "Let workers reach HOST[:PORT] or CIDR despite the default deny; repeatable (WORKYARD_EGRESS_ALLOW, comma separated)", repeatable: true },
  { flags: "--egress-deny <RULE>", description: "Deny HOST[:PORT] or CIDR to workers and to the server's own calls; repeatable (WORKYARD_EGRESS_DENY)", repeatable: true },
  { flags: "--egress-ca <FILE>", description: "Extra CA certificates (PEM) the egress gateway trusts for HTTPS (WORKYARD_EGRESS_CA_FILE)" },
  { flags: "--egress-proxy <URL>", description: "HTTP proxy for outbound connections (WORKYARD_EGRESS_PROXY; default HTTPS_PROXY, with NO_PROXY)" },
  { flags: "--npm-registry <URL>", description: "Registry builds install from (WORKYARD_NPM_REGISTRY; default npm_config_registry or registry.npmjs.org)" },
  { flags: "--worker-uids <FIRST-LAST>", description: "As root: uids given to workspaces, one each (WORKYARD_WORKER_UIDS; default 200000-299999)" },
  { flags: "--max-processes <N>", description: "Worker processes at once (WORKYARD_MAX_PROCESSES; default 32)" },
  { flags: "--worker-cpu <CORES>", description: "CPU a worker process may use, in cores (WORKYARD_WORKER_CPU; default 1)" },
  { flags: "--runs-per-process <N>", description: "Runs a worker process takes at once; 1: one at a time (WORKYARD_RUNS_PER_PROCESS; default 16)" },
  { flags: "--run-retention <DURATION>", description: "Delete runs and their logs after this long (WORKYARD_RUN_RETENTION; default 30d)" },
  { flags: "--deployments-kept <N>", description: "Older deployments kept per worker besides the live one (WORKYARD_DEPLOYMENTS_KEPT; default 10)" },
  { flags: "--log-level <LEVEL>", description: "fatal, error, warn, info, debug or trace (WORKYARD_LOG_LEVEL; default info)" },
];

type ServerOptions = Parameters<Awaited<ReturnType<typeof loadServer>>["startServer"]>[0];

/** A path option against the invocation's directory (which, in-process, is not this process's). */
export function pathOption(opts: Record<string, unknown>, cwd: string, name: string): string | undefined {
  return typeof opts[name] === "string" ? path.resolve(cwd, opts[name]) : undefined;
}

/**
 * What the user gave on the command line, as the server's options; everything else stays unset,
 * for the server's config to take from the environment or its defaults.
 */
export function serverOptions(opts: Record<string, unknown>, cwd = process.cwd()): NonNullable<ServerOptions> {
  const text = (name: string) => (typeof opts[name] === "string" ? (opts[name] as string) : undefined);
  const number = (name: string) => (typeof opts[name] === "string" ? Number(opts[name]) : undefined);
  const given: NonNullable<ServerOptions> = {
    host: text("host"),
    port: number("port"),
    dataDir: pathOption(opts, cwd, "dataDir"),
    publicUrl: text("publicUrl"),
    runTimeout: text("runTimeout"),
    runMemoryMb: number("runMemoryMb"),
    // Negatable: commander reports `true` when the flag is absent, so only `false` was given.
    backgroundRefresh: opts.backgroundRefresh === false ? false : undefined,
    allowInsecureOauth: opts.allowInsecureOauth === true ? true : undefined,
    providerCatalog: text("providerCatalog"),
    providerTimeout: text("providerTimeout"),
    refreshKeepAlive: text("refreshKeepAlive"),
    refreshConcurrency: number("refreshConcurrency"),
    maxConcurrentRequests: number("maxConcurrentRequests"),
    isolation: text("isolation"),
    egressAllow: opts.egressAllow as string[] | undefined,
    egressDeny: opts.egressDeny as string[] | undefined,
    egressCaFile: text("egressCa"),
    egressProxy: text("egressProxy"),
    npmRegistry: text("npmRegistry"),
    workerUids: text("workerUids"),
    maxProcesses: number("maxProcesses"),
    workerCpu: number("workerCpu"),
    runsPerProcess: number("runsPerProcess"),
    runRetention: text("runRetention"),
    deploymentsKept: number("deploymentsKept"),
    logLevel: text("logLevel"),
  };
  return Object.fromEntries(Object.entries(given).filter(([, value]) => value !== undefined)) as NonNullable<ServerOptions>;
}

/** The server package, loaded only by `ntn server ...`: other commands never load the database drivers. */
export async function loadServer() {
  return import("@workyard/server");
}

/** The server's start-up errors (bad options, keys, catalog) are the user's to fix: no stack. */
export function asUserError(server: Awaited<ReturnType<typeof loadServer>>, error: unknown): unknown {
  if (
    error instanceof server.ConfigError ||
    error instanceof server.KeyringError ||
    error instanceof server.CatalogError ||
    error instanceof server.IsolationRefused
  ) {
    return new UserError(error.message);
  }
  return error;
}
