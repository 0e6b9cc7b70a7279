import fs from "node:fs";
import { readState, saveLogin } from "../../config.js";
import { defineCommand } from "../../define-command.js";
import { UserError } from "../../errors.js";
import { asUserError, loadServer, STORE_OPTIONS } from "./options.js";

export default defineCommand({
  summary: "Start the Workyard server",
  description:
    "Start the Workyard server. Data lives in SQLite under the data directory, or in PostgreSQL when " +
    "DATABASE_URL is set. WORKYARD_MASTER_KEY (base64 of 32 bytes, comma separated, newest first) " +
    "overrides the generated <data dir>/master.key.",
  options: [
    { flags: "--host <HOST>", description: "Address to listen on", default: "127.0.0.1" },
    { flags: "--port <PORT>", description: "Port to listen on (0 picks a free port)", default: "7777" },
    ...STORE_OPTIONS,
    { flags: "--public-url <URL>", description: "Base URL users and OAuth providers reach this server by (default: http://HOST:PORT)" },
    { flags: "--run-timeout <DURATION>", description: "Time limit of a run, e.g. 60s or 5m", default: "60s" },
    { flags: "--run-memory-mb <MB>", description: "Heap limit of a worker process, in MiB", default: "256" },
    { flags: "--no-background-refresh", description: "Refresh OAuth tokens only when a request needs them" },
    { flags: "--allow-insecure-oauth", description: "Allow plain-http OAuth endpoints that are not on loopback" },
    { flags: "--provider-catalog <FILE>", description: "Extra OAuth provider quirks, a YAML file in the catalog's format (WORKYARD_PROVIDER_CATALOG)" },
    { flags: "--provider-timeout <DURATION>", description: "How long an OAuth token endpoint gets to answer", default: "10s" },
    { flags: "--refresh-keep-alive <DURATION>", description: "Refresh a refresh token left unused this long", default: "7d" },
    { flags: "--refresh-concurrency <N>", description: "Background token refreshes at once", default: "16" },
    { flags: "--max-concurrent-requests <N>", description: "Requests handled at once; beyond, 503 with Retry-After", default: "4096" },
    // Isolation and limits. No commander defaults: the server's config owns them, so the
    // WORKYARD_* variables apply when a flag is not given.
    { flags: "--isolation <MODE>", description: "strict: refuse to start unless workers get namespaces, their own uids and the egress gateway (WORKYARD_ISOLATION; default standard)" },
    { flags: "--egress-allow <RULE>", description: "Let workers reach HOST[:PORT] or CIDR despite the default deny; repeatable (WORKYARD_EGRESS_ALLOW, comma separated)", repeatable: true },
    { flags: "--egress-deny <RULE>", description: "Deny HOST[:PORT] or CIDR to workers and to the server's own calls; repeatable (WORKYARD_EGRESS_DENY)", repeatable: true },
    { flags: "--egress-ca <FILE>", description: "Extra CA certificates (PEM) the egress gateway trusts for HTTPS (WORKYARD_EGRESS_CA_FILE)" },
    { flags: "--egress-proxy <URL>", description: "HTTP proxy for outbound connections (WORKYARD_EGRESS_PROXY; default HTTPS_PROXY, with NO_PROXY)" },
    { flags: "--npm-registry <URL>", description: "Registry builds install from (WORKYARD_NPM_REGISTRY; default: npm_config_registry or registry.npmjs.org)" },
    { flags: "--worker-uids <FIRST-LAST>", description: "As root: uids given to workspaces, one each (WORKYARD_WORKER_UIDS; default 200000-299999)" },
    { flags: "--max-processes <N>", description: "Worker processes at once (WORKYARD_MAX_PROCESSES; default 32)" },
    { flags: "--worker-cpu <CORES>", description: "CPU a worker process may use, in cores (WORKYARD_WORKER_CPU; default 1)" },
    { flags: "--run-retention <DURATION>", description: "Delete runs and their logs after this long (WORKYARD_RUN_RETENTION; default 30d)" },
    { flags: "--deployments-kept <N>", description: "Older deployments kept per worker besides the live one (WORKYARD_DEPLOYMENTS_KEPT; default 10)" },
    { flags: "--log-level <LEVEL>", description: "fatal, error, warn, info, debug or trace", default: "info" },
  ],
  async run(ctx) {
    const server = await loadServer();
    const o = ctx.opts as Record<string, string | boolean | undefined>;
    const port = Number(o.port);
    if (!Number.isInteger(port)) throw new UserError(`--port must be a number; got ${JSON.stringify(o.port)}.`);
    let running;
    try {
      running = await server.startServer({
        host: o.host as string,
        port,
        dataDir: o.dataDir as string | undefined,
        publicUrl: o.publicUrl as string | undefined,
        runTimeout: o.runTimeout as string,
        runMemoryMb: Number(o.runMemoryMb),
        backgroundRefresh: o.backgroundRefresh !== false,
        allowInsecureOauth: Boolean(o.allowInsecureOauth),
        providerCatalog: o.providerCatalog as string | undefined,
        providerTimeout: o.providerTimeout as string,
        refreshKeepAlive: o.refreshKeepAlive as string,
        maxConcurrentRequests: Number(o.maxConcurrentRequests),
        refreshConcurrency: Number(o.refreshConcurrency),
        logLevel: o.logLevel as string,
        ...definedOnly({
          isolation: o.isolation as string | undefined,
          egressAllow: o.egressAllow as string[] | undefined,
          egressDeny: o.egressDeny as string[] | undefined,
          egressCaFile: o.egressCa as string | undefined,
          egressProxy: o.egressProxy as string | undefined,
          npmRegistry: o.npmRegistry as string | undefined,
          workerUids: o.workerUids as string | undefined,
          maxProcesses: o.maxProcesses === undefined ? undefined : Number(o.maxProcesses),
          workerCpu: o.workerCpu === undefined ? undefined : Number(o.workerCpu),
          runRetention: o.runRetention as string | undefined,
          deploymentsKept: o.deploymentsKept === undefined ? undefined : Number(o.deploymentsKept),
        }),
      });
    } catch (error) {
      throw asUserError(server, error);
    }
    const { bootstrap, publicUrl, config, store } = running;
    const out = ctx.out;
    out.data(`Workyard ${server.VERSION}: data in ${store.location}${store.dialect === "postgres" ? " (PostgreSQL)" : ""}`);
    if (bootstrap.created) {
      out.data(`Created workspace "${bootstrap.workspace.name}" and its admin token in ${bootstrap.adminTokenFile}.`);
    }
    // Log the CLI on this machine in, unless it already has a login for this server.
    if (bootstrap.adminTokenFile && !readState(ctx.env).servers[publicUrl]) {
      const token = fs.readFileSync(bootstrap.adminTokenFile, "utf8").trim();
      saveLogin(publicUrl, { token, workspaceId: bootstrap.workspace.id, workspaceName: bootstrap.workspace.name, tokenName: "admin" }, ctx.env);
      out.data(`Logged the ntn CLI on this machine in to ${publicUrl}.`);
    }
    if (bootstrap.adminTokenFile) {
      out.data("Point the official ntn CLI at this server with:");
      out.data(`  export NOTION_API_BASE_URL=${publicUrl}`);
      out.data(`  export NOTION_WORKSPACE_ID=${bootstrap.workspace.id}`);
      out.data(`  export NOTION_API_TOKEN="$(cat ${bootstrap.adminTokenFile})"`);
    }
    // What workers get and may reach, said at every start; a server that cannot isolate them says so loudly.
    if (running.security.isolated) out.data(running.security.isolation);
    else out.warn(running.security.isolation);
    for (const line of running.security.egress) out.data(line);
    if (config.allowInsecureOauth) {
      out.warn("--allow-insecure-oauth: OAuth endpoints over plain http are allowed beyond loopback; tokens may cross the network in clear.");
    }
    out.data(`Listening on ${running.url}`);

    await new Promise<void>((resolve) => {
      const shutdown = () => {
        process.off("SIGINT", shutdown);
        process.off("SIGTERM", shutdown);
        out.status("Shutting down...");
        running.stop().then(resolve, resolve);
      };
      process.on("SIGINT", shutdown);
      process.on("SIGTERM", shutdown);
    });
  },
});

/** Options the user gave; the rest is left to the server's config (flag, then environment, then default). */
function definedOnly<T extends Record<string, unknown>>(options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined)) as Partial<T>;
}
