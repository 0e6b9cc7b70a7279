import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Kysely } from "kysely";
import type { Caller } from "../auth/tokens.js";
import { layout } from "../data-dir.js";
import { AppError, isAppError } from "../errors.js";
import type { Isolation } from "../executor/isolation.js";
import type { Executor, ExecTarget } from "../executor/pool.js";
import { LoadError } from "../executor/sandbox.js";
import { capabilityNotFound } from "../executor/protocol.js";
import { probeClientSecretNames } from "./client-secret-names.js";
import { newId } from "../ids.js";
import { Slots } from "../slots.js";
import { LineQueue, type OutputLine } from "../line-queue.js";
import type { Logger } from "../log.js";
import type { SecretService } from "../secrets/service.js";
import * as deploymentsStore from "../store/deployments.js";
import type { DeploymentMeta } from "../store/deployments.js";
import type { Database, DeploymentRow, WorkerRow } from "../store/schema.js";
import * as uploadsStore from "../store/uploads.js";
import * as workersStore from "../store/workers.js";
import * as workspacesStore from "../store/workspaces.js";
import type { Keyring } from "../vault/keyring.js";
import { VaultError } from "../vault/seal.js";
import type { WorkerService } from "../workers/service.js";
import { openArchive, readUploadArchive } from "../workers/uploads.js";
import { extractArchive } from "./archive.js";
import { installDependencies, type BuildEgressOpener, type BuildTools } from "./build-sandbox.js";
import { bundleProject, openBundle, sealBundle, type Bundle } from "./bundle.js";
import { checkDependencySources } from "./dependencies.js";
import { adoptTree, installedTree, readInstallInput, treeHash } from "./install.js";
import { asManifest, capabilitiesOf, openManifest, sealManifest, summarise, type CapabilitySummary, type WorkerManifest } from "./manifest.js";
import type { ChangeFeed } from "../store/changes.js";
import { ReadCache } from "../store/read-cache.js";
import { materialise } from "./materialise.js";

/** Build log kept with a deployment, bytes. */
const BUILD_LOG_LIMIT = 256 * 1024;
/** An install or a bundle is stopped after this long. */
const BUILD_TIMEOUT_MS = 10 * 60 * 1000;

/** What a build reports as it goes: its log, line by line, then the deployment it made live or why it failed. */
export type BuildEvent = OutputLine | { kind: "live"; deploymentId: string } | { kind: "failed"; message: string };

export interface BuildService {
  /** The latest unbuilt upload to a live deployment, its events as they happen. */
  build(caller: Caller, workerId: string): Promise<AsyncIterable<BuildEvent>>;
  /** The same build, whole: the deployment it made live, or an AppError build_failed. */
  buildWhole(caller: Caller, workerId: string): Promise<{ deploymentId: string }>;
  /** UpdateSyncCapabilityDisabled: sync capabilities do not run here, so there is nothing to switch. */
  setSyncDisabled(caller: Caller, workerId: string, key: string, disabled: boolean): Promise<never>;
  /** The live deployment's capabilities (tags and keys), empty before the first deploy. */
  capabilities(caller: Caller, workerId: string): Promise<CapabilitySummary[]>;
  /**
   * The live deployment's manifest as the worker's current secrets make it: re-read in the sandbox
   * when the secrets changed since it was read (here or in another server process).
   */
  liveManifest(worker: WorkerRow, options?: { workerIsFresh?: boolean }): Promise<{ deployment: DeploymentMeta; manifest: WorkerManifest } | undefined>;
  /** After a secrets change: re-reads the live manifest now, so what depends on it is current. */
  onSecretsChanged(worker: WorkerRow): Promise<string[]>;
  /** What the executor needs to run a deployment with the worker's current secrets. */
  execTarget(worker: WorkerRow, deployment: DeploymentMeta, options?: { workerIsFresh?: boolean }): Promise<ExecTarget>;
  liveDeployment(worker: WorkerRow): Promise<DeploymentMeta | undefined>;
  /** The live deployment's bundle code (for reading which env names it uses). */
  liveBundle(worker: WorkerRow): Promise<string | undefined>;
}

export function createBuildService(options: {
  db: Kysely<Database>;
  /** Live deployments are kept in memory between runs; writes to them are told here (changes.ts). */
  changes: ChangeFeed;
  keyring: Keyring;
  dataDir: string;
  executor: Executor;
  workers: WorkerService;
  secrets: SecretService;
  log: Logger;
  isolation: Isolation;
  tools: BuildTools;
  /** The npm registry builds install from (config.npmRegistry). */
  registry: string;
  /** The egress gateway for builds: npm reaches the registry through it, and nothing else. */
  egress: BuildEgressOpener | undefined;
  /** Where the gateway's sockets go (a short path). */
  socketDir: string;
  cpuCores: number;
  /**
   * After a deployment went live: what follows from its capabilities (webhook URLs); the lines it
   * answers go to the build log. Its failure is logged, and the deployment stays live.
   */
  onLive?: (worker: WorkerRow, capabilities: CapabilitySummary[]) => Promise<string[]>;
  now?: () => number;
}): BuildService {
  const { db, changes, keyring, dataDir, executor, workers, secrets, log, isolation } = options;
  const deploymentsById = new ReadCache<DeploymentMeta>(changes, "deployments", (row) => row.id);
  const now = options.now ?? Date.now;
  const dirs = layout(dataDir);

  // Builds cost cores and memory: a few at once on this server, one at a time per workspace.
  const buildSlots = new Slots(Math.max(2, os.availableParallelism()));
  const workspaceSlots = new Map<string, Slots>();
  async function buildSlot(workspaceId: string, onWait: () => void): Promise<() => void> {
    let mine = workspaceSlots.get(workspaceId);
    if (!mine) workspaceSlots.set(workspaceId, (mine = new Slots(1)));
    if (mine.busy || buildSlots.busy) onWait();
    const releaseMine = await mine.take();
    const releaseAll = await buildSlots.take();
    return () => {
      releaseAll();
      releaseMine();
    };
  }

  // A workspace's sandbox index never changes: its uid is looked up once per process.
  const sandboxIndexes = new Map<string, number>();
  async function userOf(workspaceId: string): Promise<{ uid: number; gid: number } | undefined> {
    // Looked up whoever the server runs as: it also names the workspace's npm cache.
    let index = sandboxIndexes.get(workspaceId);
    if (index === undefined) {
      index = await workspacesStore.sandboxIndexOf(db, workspaceId);
      if (index === undefined) throw new Error(`Workspace ${workspaceId} has no sandbox index.`);
      sandboxIndexes.set(workspaceId, index);
    }
    return isolation.privileged ? isolation.userFor(index) : undefined;
  }

  /** npm in the install sandbox, as the workspace's uid, with the workspace's own npm cache. */
  async function install(step: {
    owner: { workspaceId: string; workerId: string };
    projectDir: string;
    outDir: string;
    lockfile: boolean;
    onLog(stream: "stdout" | "stderr", line: string): void;
  }) {
    const user = await userOf(step.owner.workspaceId);
    const index = sandboxIndexes.get(step.owner.workspaceId) ?? 0;
    return installDependencies({
      isolation,
      tools: options.tools,
      user,
      identity: step.owner,
      projectDir: step.projectDir,
      outDir: step.outDir,
      // A cache per workspace: one workspace's build cannot plant entries another's reads.
      npmCacheDir: path.join(dirs.npmCache, String(index)),
      lockfile: step.lockfile,
      registry: options.registry,
      egress: options.egress,
      socketDir: options.socketDir,
      cpuCores: options.cpuCores,
      timeoutMs: BUILD_TIMEOUT_MS,
      onLog: step.onLog,
    });
  }

  /**
   * Unpacks a source archive into a fresh project folder, without the project's .npmrc (builds use
   * the server's registry settings, never the tenant's) and with its dependency sources checked.
   */
  async function unpackProject(
    archive: Buffer,
    workDir: string,
  ): Promise<{ projectDir: string; installDir: string; files: number; ignored: string[]; skipped: string[] }> {
    const projectDir = path.join(workDir, "project");
    fs.mkdirSync(projectDir, { recursive: true, mode: 0o700 });
    const listing = await extractArchive(archive, projectDir);
    // What would steer npm besides the lockfile: the tenant's npm settings, a shrinkwrap, and
    // packages of its own making (npm install keeps what node_modules already holds).
    const ignored: string[] = [];
    for (const name of [".npmrc", "npm-shrinkwrap.json", "node_modules"]) {
      const file = path.join(projectDir, name);
      if (!fs.existsSync(file)) continue;
      ignored.push(name);
      fs.rmSync(file, { recursive: true, force: true });
    }
    checkDependencySources(projectDir);
    // npm runs in a folder of its own holding the two files that decide the tree, nothing else.
    const installDir = path.join(workDir, "install");
    fs.mkdirSync(installDir, { mode: 0o700 });
    for (const name of ["package.json", "package-lock.json"]) {
      if (fs.existsSync(path.join(projectDir, name))) fs.copyFileSync(path.join(projectDir, name), path.join(installDir, name));
    }
    return { projectDir, installDir, files: listing.files.length, ignored, skipped: listing.skipped };
  }

  // Installs of one tree in this process: a second build of the same lockfile waits for the first.
  const installing = new Map<string, Promise<string>>();

  /**
   * The installed tree of `hash` on this machine: there already, or installed from the deployment's
   * stored source (a deployment built on another server process, or a tree collected meanwhile).
   */
  async function treeFor(deployment: Pick<DeploymentRow, "id" | "workspace_id" | "worker_id" | "upload_id">, hash: string): Promise<string> {
    const ready = installedTree(dirs.deps, hash);
    if (ready) return ready;
    let pending = installing.get(hash);
    if (!pending) {
      pending = (async () => {
        const archive = await readUploadArchive(db, keyring, deployment.upload_id);
        if (!archive) throw new Error(`The source archive of deployment ${deployment.id} is missing from the store.`);
        fs.mkdirSync(dirs.builds, { recursive: true, mode: 0o700 });
        const workDir = fs.mkdtempSync(path.join(dirs.builds, "src-"));
        try {
          const { installDir } = await unpackProject(archive, workDir);
          const input = readInstallInput(installDir);
          const lines: string[] = [];
          const result = await install({
            owner: { workspaceId: deployment.workspace_id, workerId: deployment.worker_id },
            projectDir: installDir,
            outDir: path.join(workDir, "out"),
            lockfile: Boolean(input.lockfile),
            onLog: (_stream, line) => lines.push(line),
          });
          if (!result.ok) {
            log.warn({ deploymentId: deployment.id, npm: lines.slice(-10).join("\n") }, "installing a deployment's dependencies failed");
            throw new AppError("build_failed", result.error ?? "Installing the deployment's dependencies failed.", { hint: result.hint });
          }
          return adoptTree(dirs.deps, hash, path.join(installDir, "node_modules"));
        } finally {
          fs.rmSync(workDir, { recursive: true, force: true });
        }
      })().finally(() => installing.delete(hash));
      installing.set(hash, pending);
    }
    return pending;
  }

  async function readBundle(deploymentId: string): Promise<Bundle | undefined> {
    const row = await deploymentsStore.findDeploymentBundle(db, deploymentId);
    return row ? openBundle(keyring, deploymentId, row) : undefined;
  }

  async function execTarget(
    worker: WorkerRow,
    deployment: DeploymentMeta,
    options: { workerIsFresh?: boolean; bundle?: Bundle } = {},
  ): Promise<ExecTarget> {
    const current = options.workerIsFresh ? worker : ((await workersStore.findWorker(db, worker.workspace_id, worker.id)) ?? worker);
    const user = await userOf(worker.workspace_id);
    return {
      workspaceId: worker.workspace_id,
      user,
      workerId: worker.id,
      deploymentId: deployment.id,
      secretsVersion: current.secrets_version,
      secrets: () => secrets.runtimeSecretsOf(current),
      materialise: () =>
        materialise({
          dataDir,
          deployment,
          user,
          readBundle: async () => options.bundle ?? readBundle(deployment.id),
          installTree: (hash) => treeFor(deployment, hash),
        }),
    };
  }

  // Opened manifests by deployment, for as long as the sealed bytes stay the same: runs and token
  // reads need them on every request, and opening means a decryption and a JSON parse.
  const manifestCache = new Map<string, { keyId: string; version: number | null; sealed: Buffer; manifest: WorkerManifest }>();
  function cachedManifest(deployment: DeploymentMeta): WorkerManifest | undefined {
    if (!deployment.manifest_sealed || !deployment.manifest_key_id) return undefined;
    const hit = manifestCache.get(deployment.id);
    if (hit && hit.keyId === deployment.manifest_key_id && hit.version === deployment.manifest_secrets_version && hit.sealed.equals(deployment.manifest_sealed)) {
      return hit.manifest;
    }
    const manifest = openManifest(keyring, deployment);
    if (!manifest) return undefined;
    if (manifestCache.size >= 500) manifestCache.delete(manifestCache.keys().next().value!);
    manifestCache.set(deployment.id, { keyId: deployment.manifest_key_id, version: deployment.manifest_secrets_version, sealed: deployment.manifest_sealed, manifest });
    return manifest;
  }

  async function liveDeployment(worker: WorkerRow): Promise<DeploymentMeta | undefined> {
    const id = worker.live_deployment_id;
    if (!id) return undefined;
    return deploymentsById.get(id, () => deploymentsStore.findDeployment(db, id));
  }

  /** Loads the deployment with the worker's current secrets and stores the manifest it reports. */
  async function rereadManifest(worker: WorkerRow, deployment: DeploymentMeta): Promise<WorkerManifest> {
    const target = await execTarget(worker, deployment, { workerIsFresh: true });
    const { manifest: raw } = await executor.loadManifest(target);
    const manifest = asManifest(raw);
    const sealed = sealManifest(keyring, deployment, manifest);
    await changes.transaction(db, async (trx, publish) => {
      await deploymentsStore.updateManifest(trx, deployment.id, {
        keyId: sealed.keyId,
        sealed: sealed.sealed,
        secretsVersion: target.secretsVersion,
        capabilities: JSON.stringify(summarise(manifest)),
      });
      publish({ table: "deployments", id: deployment.id });
    });
    return manifest;
  }

  async function runBuild(caller: Caller, worker: WorkerRow, queue: LineQueue<BuildEvent>): Promise<void> {
    const logLines: string[] = [];
    let logBytes = 0;
    // What the worker's own code prints (at load, when the manifest is read) may hold its secrets:
    // the log names them instead, streamed and stored.
    const scrub = scrubberFor(Object.values(await secrets.secretsOf(worker)));
    const say = (stream: "stdout" | "stderr", raw: string) => {
      const data = scrub(raw);
      if (logBytes < BUILD_LOG_LIMIT) {
        logLines.push(`${stream === "stderr" ? "[err] " : ""}${data}`);
        logBytes += data.length;
      }
      queue.push({ kind: "output", stream, data });
    };

    const upload = openArchive(keyring, await uploadsStore.latestUnbuiltUpload(db, worker.id));
    if (!upload || !upload.archive) {
      throw new AppError("nothing_to_build", "There is no uploaded source to build.", {
        hint: "Run `ntn workers deploy`, which uploads the source and builds it.",
      });
    }
    if (!(await uploadsStore.claimUploadForBuild(db, upload.id, now()))) {
      throw new AppError("build_in_progress", "Another build took this upload.", { hint: "Wait for it, or deploy again." });
    }
    const deployment: DeploymentRow = {
      id: newId(),
      workspace_id: worker.workspace_id,
      worker_id: worker.id,
      upload_id: upload.id,
      created_at: now(),
      finished_at: null,
      status: "building",
      lockfile_hash: null,
      bundle: null,
      source_map: null,
      bundle_key_id: null,
      bundle_sealed: null,
      capabilities: null,
      manifest_key_id: null,
      manifest_sealed: null,
      manifest_secrets_version: null,
      client_secret_names: null,
      build_log: null,
      error: null,
    };
    await deploymentsStore.insertDeployment(db, deployment);

    const workDir = path.join(dirs.builds, deployment.id);
    const releaseSlot = await buildSlot(worker.workspace_id, () => say("stdout", "Waiting for another build to finish..."));
    // Where a build's time goes, for the operator's debug log.
    let phaseStart = performance.now();
    const phase = (name: string) => {
      const now = performance.now();
      log.debug({ deploymentId: deployment.id, phase: name, ms: Math.round(now - phaseStart) }, "build phase");
      phaseStart = now;
    };
    try {
      fs.mkdirSync(workDir, { recursive: true, mode: 0o700 });
      const unpacked = await unpackProject(upload.archive, workDir);
      phase("unpack");
      say("stdout", `Unpacked the source: ${unpacked.files} files, ${Math.ceil(upload.archive.length / 1024)} KiB compressed.`);
      for (const skipped of unpacked.skipped) say("stderr", `Skipped ${skipped}: only regular files are deployed.`);
      if (unpacked.ignored.includes(".npmrc")) say("stderr", `Ignored the project's .npmrc: builds install from ${options.registry} with the server's npm settings.`);
      for (const name of unpacked.ignored.filter((n) => n !== ".npmrc")) say("stderr", `Ignored the project's ${name}: dependencies are installed from package-lock.json alone.`);

      const input = readInstallInput(unpacked.installDir);
      if (!input.lockfile) say("stderr", "No package-lock.json: installing with `npm install` (commit a lockfile for repeatable builds).");
      const hash = treeHash(input, options.registry, worker.workspace_id);
      // Another build of this process installing the same tree: wait for it, then only bundle.
      await installing.get(hash)?.catch(() => undefined);
      const cached = installedTree(dirs.deps, hash);
      say("stdout", cached ? `Dependencies unchanged: reusing tree ${hash.slice(0, 12)}.` : "Installing dependencies in the build sandbox.");
      const outDir = path.join(workDir, "out");
      let installDone: (tree: string) => void = () => {};
      let installFailed: (error: unknown) => void = () => {};
      if (!cached) {
        const pending = new Promise<string>((resolve, reject) => {
          installDone = resolve;
          installFailed = reject;
        });
        pending.catch(() => undefined);
        installing.set(hash, pending);
      }
      if (!cached) {
        // The SDK declares Node 22; it runs on Node 20. npm's five lines about it every build say
        // nothing new: the worker's first build says it once, in one line (and the README).
        let engineWarnings = false;
        const npmSay = (stream: "stdout" | "stderr", line: string) => {
          if (/^npm warn EBADENGINE\b/.test(line)) engineWarnings = true;
          else say(stream, line);
        };
        try {
          const result = await install({
            owner: { workspaceId: worker.workspace_id, workerId: worker.id },
            projectDir: unpacked.installDir,
            outDir,
            lockfile: Boolean(input.lockfile),
            onLog: npmSay,
          });
          if (engineWarnings && (await deploymentsStore.countDeployments(db, worker.id)) <= 1) {
            say("stderr", `npm warns that a package asks for another Node version (EBADENGINE); @notionhq/workers asks for Node 22 and runs on this server's Node ${process.versions.node}.`);
          }
          if (!result.ok) throw new AppError("build_failed", result.error ?? "The install failed.", { hint: result.hint });
          installDone(adoptTree(dirs.deps, hash, path.join(unpacked.installDir, "node_modules")));
        } catch (error) {
          installFailed(error);
          throw error;
        } finally {
          installing.delete(hash);
        }
        phase("install");
        say("stdout", `Installed dependencies (tree ${hash.slice(0, 12)}).`);
      }
      say("stdout", "Bundling src/index.ts with esbuild.");
      const bundle = await bundleProject({
        isolation,
        tools: options.tools,
        user: await userOf(worker.workspace_id),
        projectDir: unpacked.projectDir,
        outDir: path.join(workDir, "bundle"),
        cpuCores: options.cpuCores,
        onLog: (line) => say("stderr", line),
      });
      phase("bundle");
      const built: DeploymentRow = { ...deployment, lockfile_hash: hash };

      say("stdout", "Loading the worker to read its manifest.");
      let manifest: WorkerManifest;
      const target = await execTarget(worker, built, { bundle });
      try {
        manifest = asManifest((await executor.loadManifest(target)).manifest);
      } catch (error) {
        if (error instanceof LoadError) {
          for (const line of error.logs.split("\n").filter(Boolean)) say("stdout", line);
          for (const line of (error.error.stack ?? `${error.error.name}: ${error.error.message}`).split("\n")) say("stderr", line);
          throw new AppError("build_failed", `The worker failed to load: ${scrub(error.error.message)}`, {
            hint: "The build log shows the worker's error and stack.",
          });
        }
        throw error;
      }
      phase("manifest");
      const summary = summarise(manifest);
      say("stdout", `Capabilities: ${summary.map((c) => `${c._tag} ${c.key}`).join(", ") || "none"}.`);
      // Recorded now, so a configuration error later names them without loading the worker again.
      const clientSecretNames = summary.some((c) => c._tag === "oauth")
        ? await probeClientSecretNames(executor, target, bundle.code).catch((error: unknown) => {
            log.warn({ err: error, deploymentId: deployment.id }, "could not read which secrets feed the OAuth clients");
            return null;
          })
        : [];
      phase("client secret names");
      const sealed = sealManifest(keyring, built, manifest);
      const sealedBundle = sealBundle(keyring, built, bundle);
      // The deployment goes live on every process with this commit, or stays unfinished (and is
      // marked failed below) if the commit, its announcement included, fails.
      await changes.transaction(db, async (trx, publish) => {
        await deploymentsStore.finishDeployment(trx, deployment.id, {
          status: "ready",
          finished_at: now(),
          bundle_key_id: sealedBundle.keyId,
          bundle_sealed: sealedBundle.sealed,
          lockfile_hash: hash,
          capabilities: JSON.stringify(summary),
          manifest_key_id: sealed.keyId,
          manifest_sealed: sealed.sealed,
          manifest_secrets_version: target.secretsVersion,
          client_secret_names: clientSecretNames === null ? null : JSON.stringify(clientSecretNames),
          build_log: logLines.join("\n"),
          error: null,
        });
        await workersStore.setLiveDeployment(trx, worker.id, deployment.id, now());
        publish({ table: "workers", id: worker.id }, { table: "deployments", id: deployment.id });
      });
      phase("commit");
      say("stdout", `Deployment ${deployment.id} is live.`);
      try {
        for (const line of (await options.onLive?.(worker, summary)) ?? []) say("stdout", line);
      } catch (error) {
        log.error({ err: error, deploymentId: deployment.id }, "setting up a live deployment's capabilities failed");
      }
      queue.push({ kind: "live", deploymentId: deployment.id });
    } catch (error) {
      const message = isAppError(error) ? error.message : `Build failed: ${(error as Error).message}`;
      if (isAppError(error) && error.hint) say("stderr", error.hint);
      if (!isAppError(error)) log.error({ err: error, deploymentId: deployment.id }, "build failed unexpectedly");
      await deploymentsStore.finishDeployment(db, deployment.id, {
        status: "failed",
        finished_at: now(),
        bundle_key_id: null,
        bundle_sealed: null,
        lockfile_hash: null,
        capabilities: null,
        manifest_key_id: null,
        manifest_sealed: null,
        manifest_secrets_version: null,
        client_secret_names: null,
        build_log: logLines.join("\n"),
        error: scrub(message),
      });
      queue.push({ kind: "failed", message: scrub(message) });
    } finally {
      releaseSlot();
      fs.rm(workDir, { recursive: true, force: true }, () => {});
    }
  }

  return {
    async build(caller, workerId) {
      const worker = await workers.get(caller, workerId);
      // Checked before the stream starts, so "nothing to build" is a plain 409, not a stream.
      const pending = await uploadsStore.latestUnbuiltUpload(db, worker.id);
      if (!pending) {
        throw new AppError("nothing_to_build", "There is no uploaded source to build.", {
          hint: "Run `ntn workers deploy`, which uploads the source and builds it.",
        });
      }
      const queue = new LineQueue<BuildEvent>();
      runBuild(caller, worker, queue)
        .catch((error: unknown) => {
          queue.push({ kind: "failed", message: isAppError(error) ? error.message : "Build failed: internal error." });
          if (!isAppError(error)) log.error({ err: error }, "build crashed");
        })
        .finally(() => queue.end());
      return queue;
    },

    async buildWhole(caller, workerId) {
      let deploymentId: string | undefined;
      let failure: string | undefined;
      for await (const event of await this.build(caller, workerId)) {
        if (event.kind === "live") deploymentId = event.deploymentId;
        if (event.kind === "failed") failure = event.message;
      }
      if (!deploymentId) throw new AppError("build_failed", failure ?? "The build failed.");
      return { deploymentId };
    },

    async setSyncDisabled(caller, workerId, key) {
      const capability = (await this.capabilities(caller, workerId)).find((c) => c.key === key);
      if (!capability) {
        const notFound = capabilityNotFound(key);
        throw new AppError(notFound.code, notFound.message, { hint: notFound.hint });
      }
      throw new AppError("capability_not_supported", `${capability._tag} capabilities do not run on this server yet, so there is nothing to enable or disable.`);
    },

    async capabilities(caller, workerId) {
      const worker = await workers.get(caller, workerId);
      const deployment = await liveDeployment(worker);
      // A copy of the shared list: the caller may annotate it.
      return capabilitiesOf(deployment).map((c) => ({ ...c }));
    },

    async liveManifest(worker, options = {}) {
      const fresh = options.workerIsFresh ? worker : ((await workersStore.findWorker(db, worker.workspace_id, worker.id)) ?? worker);
      let deployment = await liveDeployment(fresh);
      if (!deployment) return undefined;
      if (deployment.manifest_secrets_version !== fresh.secrets_version) {
        return { deployment, manifest: await rereadManifest(fresh, deployment) };
      }
      let manifest: WorkerManifest | undefined;
      try {
        manifest = cachedManifest(deployment);
      } catch (error) {
        // Kept from before a key rotation whose old key is gone by now (`ntn server rotate-key`
        // run beside a SQLite server): the store holds it re-sealed.
        if (!(error instanceof VaultError)) throw error;
        deploymentsById.forget(deployment.id);
        deployment = (await liveDeployment(fresh)) ?? deployment;
        manifest = cachedManifest(deployment);
      }
      return manifest ? { deployment, manifest } : { deployment, manifest: await rereadManifest(fresh, deployment) };
    },

    async onSecretsChanged(worker) {
      executor.retireWorker(worker.id);
      const deployment = await liveDeployment(worker);
      if (!deployment) return [];
      try {
        await rereadManifest(worker, deployment);
        return [];
      } catch (error) {
        const reason = error instanceof LoadError ? error.error.message : (error as Error).message;
        log.warn({ workerId: worker.id, reason }, "re-reading the manifest with new secrets failed");
        return [`The worker failed to load with the new values (${reason}); runs will fail until this is fixed.`];
      }
    },

    execTarget: (worker, deployment, options) => execTarget(worker, deployment, options),
    liveDeployment,
    async liveBundle(worker) {
      if (!worker.live_deployment_id) return undefined;
      return (await readBundle(worker.live_deployment_id))?.code;
    },
  };
}

/** Replaces each secret value (of 4 characters or more) in a line with its placeholder. */
export function scrubberFor(values: string[]): (text: string) => string {
  const needles = [...new Set(values.filter((v) => v.length >= 4))].sort((a, b) => b.length - a.length);
  if (needles.length === 0) return (text) => text;
  return (text) => {
    let out = text;
    for (const needle of needles) if (out.includes(needle)) out = out.split(needle).join("[secret]");
    return out;
  };
}
