import { describe, expect, it } from "vitest";
import { resolveConfig } from "../../../../server/src/config.js";
import { serverOptions } from "./options.js";

/** Every variable the README documents for `ntn server`, set to something other than its default. */
const ENV = {
  HOST: "127.0.0.2",
  PORT: "7788",
  WORKYARD_DATA_DIR: "/tmp/wy-env-data",
  WORKYARD_PUBLIC_URL: "https://workers.example.com",
  WORKYARD_RUN_TIMEOUT: "5m",
  WORKYARD_RUN_MEMORY_MB: "512",
  WORKYARD_BACKGROUND_REFRESH: "0",
  WORKYARD_ALLOW_INSECURE_OAUTH: "1",
  WORKYARD_PROVIDER_CATALOG: "/etc/workyard/providers.yaml",
  WORKYARD_PROVIDER_TIMEOUT: "20s",
  WORKYARD_REFRESH_KEEP_ALIVE: "3d",
  WORKYARD_REFRESH_CONCURRENCY: "4",
  WORKYARD_MAX_CONCURRENT_REQUESTS: "100",
  WORKYARD_LOG_LEVEL: "warn",
  WORKYARD_ISOLATION: "strict",
  WORKYARD_EGRESS_ALLOW: "api.example.com, 10.1.0.0/16",
  WORKYARD_EGRESS_DENY: "bad.example.com",
  WORKYARD_EGRESS_CA_FILE: "/etc/ssl/extra.pem",
  WORKYARD_EGRESS_PROXY: "http://proxy.example.com:3128",
  WORKYARD_NPM_REGISTRY: "https://npm.example.com/",
  WORKYARD_WORKER_UIDS: "300000-300999",
  WORKYARD_MAX_PROCESSES: "8",
  WORKYARD_WORKER_CPU: "0.5",
  WORKYARD_RUNS_PER_PROCESS: "4",
  WORKYARD_RUN_RETENTION: "7d",
  WORKYARD_DEPLOYMENTS_KEPT: "3",
  WORKYARD_WEBHOOK_BODY_LIMIT: "65536",
  WORKYARD_WEBHOOK_RATE: "60,100",
  WORKYARD_WEBHOOK_MAX_QUEUED: "100,400",
  WORKYARD_WEBHOOK_RETRY_DELAYS: "1s,2m",
  WORKYARD_WEBHOOK_RETENTION: "1d",
};

/** What commander hands the command when no flag is given: only the negatable one is set. */
const NO_FLAGS = { backgroundRefresh: true };

describe("ntn server: a flag wins, then the environment, then the default", () => {
  it("passes nothing the user did not give, so every documented variable takes effect", () => {
    expect(serverOptions(NO_FLAGS)).toEqual({});
    const config = resolveConfig(serverOptions(NO_FLAGS), ENV);
    expect(config).toMatchObject({
      host: "127.0.0.2",
      port: 7788,
      dataDir: "/tmp/wy-env-data",
      publicUrl: "https://workers.example.com",
      runTimeoutMs: 5 * 60_000,
      runMemoryMb: 512,
      backgroundRefresh: false,
      allowInsecureOauth: true,
      providerCatalog: "/etc/workyard/providers.yaml",
      providerTimeoutMs: 20_000,
      refreshKeepAliveMs: 3 * 86_400_000,
      refreshConcurrency: 4,
      maxConcurrentRequests: 100,
      logLevel: "warn",
      isolation: "strict",
      egressAllow: ["api.example.com", "10.1.0.0/16"],
      egressDeny: ["bad.example.com"],
      egressCaFile: "/etc/ssl/extra.pem",
      egressProxy: "http://proxy.example.com:3128",
      npmRegistry: "https://npm.example.com/",
      workerUids: { first: 300000, last: 300999 },
      maxProcesses: 8,
      workerCpu: 0.5,
      runsPerProcess: 4,
      runRetentionMs: 7 * 86_400_000,
      deploymentsKept: 3,
      webhookBodyLimit: 65536,
      webhookRate: { perWorker: 60, perWorkspace: 100 },
      webhookMaxQueued: { perWorkspace: 100, total: 400 },
      webhookRetryDelaysMs: [1000, 120_000],
      webhookRetentionMs: 86_400_000,
    });
    // One number for the queue's bound sets both.
    expect(resolveConfig({}, { WORKYARD_WEBHOOK_MAX_QUEUED: "50" }).webhookMaxQueued).toEqual({ perWorkspace: 50, total: 50 });
    expect(() => resolveConfig({}, { WORKYARD_WEBHOOK_MAX_QUEUED: "50,x" })).toThrow(/WORKYARD_WEBHOOK_MAX_QUEUED must be two positive integers/);
  });

  it("a flag given beats its variable", () => {
    const config = resolveConfig(
      serverOptions({ ...NO_FLAGS, port: "0", host: "127.0.0.3", runTimeout: "10s", backgroundRefresh: false, egressAllow: ["127.0.0.1:4000"], logLevel: "debug" }),
      { ...ENV, WORKYARD_BACKGROUND_REFRESH: "1" },
    );
    expect(config).toMatchObject({ port: 0, host: "127.0.0.3", runTimeoutMs: 10_000, backgroundRefresh: false, egressAllow: ["127.0.0.1:4000"], logLevel: "debug" });
  });

  it("without flags or variables, the defaults the README states", () => {
    expect(resolveConfig(serverOptions(NO_FLAGS), { HOME: "/home/me" })).toMatchObject({
      host: "127.0.0.1",
      port: 7777,
      dataDir: "/home/me/.local/share/workyard",
      runTimeoutMs: 60_000,
      runMemoryMb: 256,
      backgroundRefresh: true,
      allowInsecureOauth: false,
      providerTimeoutMs: 10_000,
      maxConcurrentRequests: 4096,
      logLevel: "info",
      isolation: "standard",
      egressAllow: [],
      npmRegistry: "https://registry.npmjs.org/",
      maxProcesses: 32,
      runsPerProcess: 16,
      deploymentsKept: 10,
      webhookBodyLimit: 1024 * 1024,
      webhookRate: { perWorker: 600, perWorkspace: 1200 },
      webhookMaxQueued: { perWorkspace: 2500, total: 10_000 },
      webhookRetryDelaysMs: [10_000, 60_000, 300_000],
      webhookRetentionMs: 7 * 86_400_000,
    });
  });
});
