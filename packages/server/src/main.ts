import fs from "node:fs";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { Kysely } from "kysely";
import { createApi, type ApiDeps } from "./api/app.js";
import { createTokenService } from "./auth/tokens.js";
import { ConfigError, resolveConfig, urlForAddress, type Config, type ServerOptions } from "./config.js";
import { layout } from "./data-dir.js";
import { createLoginService } from "./login/service.js";
import { createLogger, type Logger } from "./log.js";
import { createSecretService } from "./secrets/service.js";
import type { Store } from "./store/db.js";
import type { Database } from "./store/schema.js";
import { KeyringError } from "./vault/keyring.js";
import { openPlatform } from "./platform.js";
import { registerWeb } from "./web/routes.js";
import { createUploadService } from "./workers/uploads.js";
import { createBuildService, type BuildService } from "./builder/service.js";
import { Executor } from "./executor/pool.js";
import { childEntry, installChildEntry } from "./executor/sandbox.js";
import { detectIsolation, IsolationRefused, type Isolation } from "./executor/isolation.js";
import { removeCpuGroups } from "./executor/cgroup.js";
import { findBuildTools } from "./builder/build-sandbox.js";
import { createEgressGateway } from "./egress/gateway.js";
import { createOutboundFetch } from "./egress/outbound.js";
import { parseUpstreamProxy } from "./egress/upstream.js";
import { createEgressPolicy, EgressRuleError, localInterfaceAddresses } from "./egress/policy.js";
import { createRunService } from "./runs/service.js";
import { createOAuthService, type OAuthService } from "./oauth/service.js";
import { RefreshScheduler } from "./oauth/scheduler.js";
import { CatalogError, loadCatalog } from "./oauth/providers/load.js";
import { Maintenance } from "./maintenance.js";
import { SqliteWriter, writerDialect } from "./store/sqlite-writer.js";
import { createWorkerService } from "./workers/service.js";
import { bootstrap, createWorkspaceService, type BootstrapResult } from "./workspaces/service.js";
import { createKeyService } from "./admin.js";
import { createCapabilityService } from "./capabilities/service.js";
import { registerWebhookIngress } from "./web/webhooks.js";
import { createWebhookService, type WebhookService } from "./webhooks/service.js";

export { ConfigError, KeyringError, CatalogError, IsolationRefused, EgressRuleError, resolveConfig, openPlatform };
export type { ServerOptions, Config };

export const VERSION = "0.1.0";

export interface RunningServer {
  /** The address it listens on, `http://H:P`. */
  url: string;
  /** The base URL users and providers reach it by (--public-url, or `url`). */
  publicUrl: string;
  config: Config;
  bootstrap: BootstrapResult;
  /** What workers get here (namespaces, uids, CPU) and what they may reach: lines for the banner. */
  security: { isolation: string; isolated: boolean; egress: string[] };
  store: Store;
  log: Logger;
  stop(): Promise<void>;
}

export async function startServer(options: ServerOptions = {}): Promise<RunningServer> {
  const config = resolveConfig(options, options.env);
  const now = options.now ?? Date.now;
  const log = createLogger({ level: config.logLevel, stream: config.logStream });
  // An operator's provider catalog is checked before anything else starts: a bad entry stops the
  // server. The built-in one alone is read on first use.
  if (config.providerCatalog) await loadCatalog(config.providerCatalog);
  const catalog = () => loadCatalog(config.providerCatalog);
  // Bad egress rules stop the server before anything starts.
  const policy = createEgressPolicy({ allow: config.egressAllow, deny: config.egressDeny, serverAddresses: localInterfaceAddresses() });
  const upstreamProxy = parseUpstreamProxy(config.egressProxy, config.noProxy);
  const egressOptions = { ...(config.egressCaFile ? { caFile: config.egressCaFile } : {}), ...(upstreamProxy ? { upstreamProxy } : {}) };
  // Probing bubblewrap starts a process: it runs while the store opens.
  const isolationProbe = detectIsolation({ mode: config.isolation, workerUids: config.workerUids, dataDir: config.dataDir });
  isolationProbe.catch(() => undefined);
  const { store, keyring } = await openPlatform(config);
  const { db } = store;
  let isolation: Isolation;
  try {
    isolation = await isolationProbe;
  } catch (error) {
    await store.close();
    throw error;
  }
  // `ntn server` says this in its banner (its first lines); the log has it for log collectors.
  if (isolation.problems.length > 0) log.debug({ problems: isolation.problems }, "workers are not isolated");

  let publicUrl = config.publicUrl ?? "";
  const tokens = createTokenService(db, store.changes, now);
  const uploads = createUploadService(db, keyring, { dataDir: config.dataDir, now });
  const dirs = layout(config.dataDir);
  const gateway = createEgressGateway({ policy, log, ...egressOptions });
  // The gateway's sockets: a short folder others may pass through (not list), for sandboxed uids.
  const socketDir = fs.mkdtempSync(path.join(os.tmpdir(), "wy-sock-"));
  fs.chmodSync(socketDir, 0o711);
  const executor = new Executor({
    // Without namespaces a worker running as another uid reads the entry from the data dir.
    entry: isolation.host ? childEntry() : installChildEntry(dirs.runtime),
    scratchRoot: dirs.scratch,
    memoryMb: config.runMemoryMb,
    isolation,
    maxProcesses: config.maxProcesses,
    processesPerDeployment: config.processesPerDeployment,
    runsPerProcess: config.runsPerProcess,
    queuedRunsPerDeployment: config.queuedRunsPerDeployment,
    cpuCores: config.workerCpu,
    socketDir,
    egress: (socketPath, identity) => gateway.listen(socketPath, { identity: { ...identity, purpose: "run" } }),
    log,
  });
  // A deleted worker's processes (holding its decrypted secrets) stop at once, on this process and
  // on every other process of a cluster, as each hears the deletion (store/changes.ts).
  store.changes.onListenerError((error) => log.error({ err: error }, "a change listener failed"));
  const workers = createWorkerService({ db, changes: store.changes, uploads, onDeleted: (workerId) => executor.retireWorker(workerId), now });
  // Secrets and OAuth feed each other (PullEnv returns tokens; a secrets change re-reads the
  // manifest the OAuth settings come from): the late-bound references close the loop.
  let builder: BuildService | undefined;
  let oauth: OAuthService | undefined;
  // Deploys set up webhooks, whose deliveries run through the run service built after the builder.
  let webhooks: WebhookService | undefined;
  const secrets = createSecretService({
    now,
    db,
    changes: store.changes,
    keyring,
    workers,
    onChanged: (worker) => builder!.onSecretsChanged(worker),
    runtimeEnv: (worker, read) => oauth!.pullEnv(worker, read),
  });
  builder = createBuildService({
    now,
    db,
    changes: store.changes,
    keyring,
    dataDir: config.dataDir,
    executor,
    workers,
    secrets,
    log,
    isolation,
    tools: findBuildTools(),
    registry: config.npmRegistry,
    // npm reaches the configured registry by name, whatever it resolves to, and nothing else.
    egress: (socketPath, identity, registry) => gateway.listen(socketPath, { identity: { ...identity, purpose: "build" }, onlyTargets: [registry] }),
    socketDir,
    cpuCores: config.workerCpu,
    onLive: (worker, capabilities) => webhooks!.deployed(worker, capabilities),
  });
  oauth = createOAuthService({
    now,
    db,
    changes: store.changes,
    keyring,
    log,
    workers,
    builder,
    executor,
    publicUrl: () => publicUrl,
    allowInsecure: config.allowInsecureOauth,
    catalog,
    providerTimeoutMs: config.providerTimeoutMs,
    fetch: createOutboundFetch(policy, egressOptions),
    // The lease's clocks follow from the provider timeout (leaseTimingFor).
    timing: { keepAliveMs: config.refreshKeepAliveMs },
  });
  const scheduler = config.backgroundRefresh
    ? new RefreshScheduler({ db, connections: oauth.connections, settingsFor: oauth.settingsFor, log, concurrency: config.refreshConcurrency, now })
    : undefined;
  const writer = store.sqliteFile ? new SqliteWriter(store.sqliteFile) : undefined;
  const runs = createRunService({ db, workers, builder, executor, runTimeoutMs: config.runTimeoutMs, runEnv: oauth.runEnv, writer, log, now });
  webhooks = createWebhookService({
    dialect: store.dialect,
    db,
    changes: store.changes,
    writes: writer ? new Kysely<Database>({ dialect: writerDialect(writer) }) : db,
    attemptWrites: writer ? new Kysely<Database>({ dialect: writerDialect(writer, { durable: false }) }) : db,
    keyring,
    workers,
    builder,
    runs,
    publicUrl: () => publicUrl,
    log,
    runTimeoutMs: config.runTimeoutMs,
    limits: { maxBodyBytes: config.webhookBodyLimit, retryDelaysMs: config.webhookRetryDelaysMs, ratePerMinute: config.webhookRate, maxQueued: config.webhookMaxQueued },
    now,
  });
  const login = createLoginService(db, tokens);
  // What a crash left behind (runs and builds never finished, half-written folders) is cleared now
  // and every minute.
  const maintenance = new Maintenance({
    workerProcesses: executor,
    db,
    dataDir: config.dataDir,
    runTimeoutMs: config.runTimeoutMs,
    soleServer: store.dialect === "sqlite",
    runRetentionMs: config.runRetentionMs,
    deploymentsKept: config.deploymentsKept,
    webhookRetentionMs: config.webhookRetentionMs,
    log,
  });
  await maintenance.start();

  const boot = await bootstrap({ db, dialect: store.dialect, dataDir: config.dataDir, tokens, now });

  const deps: ApiDeps = {
    log,
    version: VERSION,
    tokens,
    workspaces: createWorkspaceService(db, tokens, now),
    keys: createKeyService(db, store.changes, keyring),
    workers,
    uploads,
    secrets,
    login,
    builder,
    capabilities: createCapabilityService({ builder, oauth }),
    runs,
    oauth,
    webhooks,
    publicUrl: () => publicUrl,
    limits: { bodyLimit: config.bodyLimit, uploadLimit: config.uploadLimit, maxConcurrentRequests: config.maxConcurrentRequests },
  };
  const app = createApi(deps);
  registerWeb(app, { publicUrl: () => publicUrl, tokens, login, oauth });
  registerWebhookIngress(app, { webhooks, maxBodyBytes: config.webhookBodyLimit });
  try {
    await app.listen({ host: config.host, port: config.port });
  } catch (error) {
    await executor.stop();
    await gateway.close();
    fs.rmSync(socketDir, { recursive: true, force: true });
    await store.close();
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EADDRINUSE") throw new ConfigError(`Port ${config.port} on ${config.host} is in use; pick another with --port (0 picks a free one).`);
    if (code === "EADDRNOTAVAIL") throw new ConfigError(`Cannot listen on ${config.host}: no such address on this machine.`);
    throw error;
  }
  const address = app.server.address() as AddressInfo;
  const url = urlForAddress(config.host, address.port);
  if (!publicUrl) publicUrl = url;
  scheduler?.start();
  webhooks.start();
  // The banner says it first; the log line is for debugging.
  log.debug({ url, publicUrl, store: store.location, dialect: store.dialect, keySource: keyring.source }, "server listening");

  let stopped = false;
  return {
    url,
    publicUrl,
    config,
    bootstrap: boot,
    security: {
      isolation: isolation.describe(),
      isolated: isolation.problems.length === 0,
      egress: [...policy.describe(), ...(upstreamProxy ? [`Egress goes through the proxy ${upstreamProxy.url.origin}${upstreamProxy.direct.length ? ` (not for ${upstreamProxy.direct.join(", ")})` : ""}.`] : [])],
    },
    store,
    log,
    async stop() {
      if (stopped) return;
      stopped = true;
      maintenance.stop();
      await scheduler?.stop();
      await app.close();
      await webhooks!.stop();
      await executor.stop();
      // Runs answered (or stopped just now) are recorded before the store closes.
      await runs.settled();
      await gateway.close();
      fs.rmSync(socketDir, { recursive: true, force: true });
      removeCpuGroups();
      await writer?.close();
      await store.close();
    },
  };
}

export { rotateMasterKey, createWorkspaceOffline } from "./admin.js";
