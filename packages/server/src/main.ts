import type { AddressInfo } from "node:net";
import { createApi, type ApiDeps } from "./api/app.js";
import { createTokenService } from "./auth/tokens.js";
import { ConfigError, resolveConfig, urlForAddress, type Config, type ServerOptions } from "./config.js";
import { createLoginService } from "./login/service.js";
import { createLogger, type Logger } from "./log.js";
import { createSecretService } from "./secrets/service.js";
import type { Store } from "./store/db.js";
import { KeyringError } from "./vault/keyring.js";
import { openPlatform } from "./platform.js";
import { registerWeb } from "./web/routes.js";
import { createUploadService } from "./workers/uploads.js";
import { createBuildService, type BuildService } from "./builder/service.js";
import { layout } from "./builder/materialise.js";
import { Executor } from "./executor/pool.js";
import { sandboxUser } from "./executor/user.js";
import { installChildEntry } from "./executor/sandbox.js";
import { createRunService } from "./runs/service.js";
import { createOAuthService, type OAuthService } from "./oauth/service.js";
import { RefreshScheduler } from "./oauth/scheduler.js";
import { registerOAuthCallback } from "./web/oauth-callback.js";
import { CatalogError, loadCatalog } from "./oauth/providers/load.js";
import { Maintenance } from "./maintenance.js";
import { SqliteWriter } from "./store/sqlite-writer.js";
import { createWorkerService } from "./workers/service.js";
import { bootstrap, type BootstrapResult } from "./workspaces/service.js";

export { ConfigError, KeyringError, CatalogError, resolveConfig, openPlatform };
export type { ServerOptions, Config };

export const VERSION = "0.1.0";

export interface RunningServer {
  /** The address it listens on, `http://H:P`. */
  url: string;
  /** The base URL users and providers reach it by (--public-url, or `url`). */
  publicUrl: string;
  config: Config;
  bootstrap: BootstrapResult;
  store: Store;
  log: Logger;
  stop(): Promise<void>;
}

export async function startServer(options: ServerOptions = {}): Promise<RunningServer> {
  const config = resolveConfig(options);
  const log = createLogger({ level: config.logLevel, stream: config.logStream });
  // An operator's provider catalog is checked before anything else starts: a bad entry stops the
  // server. The built-in one alone is read on first use.
  if (config.providerCatalog) await loadCatalog(config.providerCatalog);
  const catalog = () => loadCatalog(config.providerCatalog);
  const { store, keyring } = await openPlatform(config);
  const { db } = store;

  let publicUrl = config.publicUrl ?? "";
  const tokens = createTokenService(db);
  const uploads = createUploadService(db, keyring);
  const workers = createWorkerService({ db, uploads });
  const dirs = layout(config.dataDir);
  const user = sandboxUser(config.dataDir, log);
  const executor = new Executor({ entry: installChildEntry(dirs.runtime), scratchRoot: dirs.scratch, memoryMb: config.runMemoryMb, user, log });
  // Secrets and OAuth feed each other (PullEnv returns tokens; a secrets change re-reads the
  // manifest the OAuth settings come from): the late-bound references close the loop.
  let builder: BuildService | undefined;
  let oauth: OAuthService | undefined;
  const secrets = createSecretService({
    db,
    keyring,
    workers,
    onChanged: (worker) => builder!.onSecretsChanged(worker),
    runtimeEnv: (worker) => oauth!.pullEnv(worker),
  });
  builder = createBuildService({ db, keyring, dataDir: config.dataDir, executor, workers, secrets, log });
  oauth = createOAuthService({
    db,
    keyring,
    log,
    workers,
    builder,
    executor,
    publicUrl: () => publicUrl,
    allowInsecure: config.allowInsecureOauth,
    catalog,
    providerTimeoutMs: config.providerTimeoutMs,
    // Waiting requests outwait a lease (plus a provider timeout) before they give up.
    timing: { leaseTtlMs: config.providerTimeoutMs * 3, leaseWaitMs: config.providerTimeoutMs * 4, keepAliveMs: config.refreshKeepAliveMs },
  });
  const scheduler = config.backgroundRefresh
    ? new RefreshScheduler({ db, connections: oauth.connections, settingsFor: oauth.settingsFor, log, concurrency: config.refreshConcurrency })
    : undefined;
  const writer = store.sqliteFile ? new SqliteWriter(store.sqliteFile) : undefined;
  const runs = createRunService({ db, workers, builder, executor, runTimeoutMs: config.runTimeoutMs, runEnv: oauth.runEnv, writer, log });
  const login = createLoginService(db, tokens);
  // What a crash left behind (runs and builds never finished, half-written folders) is cleared now
  // and every minute.
  const maintenance = new Maintenance({ db, dataDir: config.dataDir, runTimeoutMs: config.runTimeoutMs, soleServer: store.dialect === "sqlite", log });
  await maintenance.start();

  const boot = await bootstrap({ db, dialect: store.dialect, dataDir: config.dataDir, tokens });

  const deps: ApiDeps = {
    db,
    keyring,
    log,
    version: VERSION,
    tokens,
    workers,
    uploads,
    secrets,
    login,
    builder,
    runs,
    oauth,
    publicUrl: () => publicUrl,
    limits: { bodyLimit: config.bodyLimit, uploadLimit: config.uploadLimit, maxConcurrentRequests: config.maxConcurrentRequests },
    registerWeb,
    webPages: [registerOAuthCallback],
  };
  const app = createApi(deps);
  try {
    await app.listen({ host: config.host, port: config.port });
  } catch (error) {
    await executor.stop();
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
  log.info({ url, publicUrl, store: store.location, dialect: store.dialect, keySource: keyring.source }, "server listening");

  let stopped = false;
  return {
    url,
    publicUrl,
    config,
    bootstrap: boot,
    store,
    log,
    async stop() {
      if (stopped) return;
      stopped = true;
      maintenance.stop();
      await scheduler?.stop();
      await app.close();
      await executor.stop();
      await writer?.close();
      await store.close();
    },
  };
}

export { rotateMasterKey, createWorkspaceOffline } from "./admin.js";
