import fs from "node:fs";
import path from "node:path";
import { AppError } from "../errors.js";
import type { DeploymentRow } from "../store/schema.js";
import { extractArchive } from "./archive.js";
import { ensureInstalled, readInstallInput } from "./install.js";

/** Where a data dir keeps what builds and runs need on disk. */
export function layout(dataDir: string) {
  return {
    deployments: path.join(dataDir, "deployments"),
    deps: path.join(dataDir, "deps"),
    npmCache: path.join(dataDir, "npm-cache"),
    builds: path.join(dataDir, "builds"),
    scratch: path.join(dataDir, "scratch"),
    runtime: path.join(dataDir, "runtime"),
  };
}

const inFlight = new Map<string, Promise<{ bundleDir: string; nodeModules: string }>>();

/**
 * A deployment's files on this machine, made from what the store holds: `index.mjs`, its map and a
 * `node_modules` link to the installed tree (installed from the stored archive's lockfile when
 * this machine has not installed it yet). Any server process can run any deployment this way.
 */
export function materialise(
  dataDir: string,
  deployment: Pick<DeploymentRow, "id" | "lockfile_hash">,
  readBundle: () => Promise<Pick<DeploymentRow, "bundle" | "source_map"> | undefined>,
  readArchive: () => Promise<Buffer | undefined>,
): Promise<{ bundleDir: string; nodeModules: string }> {
  const dirs = layout(dataDir);
  const bundleDir = path.join(dirs.deployments, deployment.id);
  const link = path.join(bundleDir, "node_modules");
  if (fs.existsSync(path.join(bundleDir, "index.mjs")) && fs.existsSync(link)) {
    return Promise.resolve({ bundleDir, nodeModules: fs.realpathSync(link) });
  }
  let pending = inFlight.get(deployment.id);
  if (!pending) {
    pending = write(dirs, bundleDir, deployment, readBundle, readArchive).finally(() => inFlight.delete(deployment.id));
    inFlight.set(deployment.id, pending);
  }
  return pending;
}

async function write(
  dirs: ReturnType<typeof layout>,
  bundleDir: string,
  deployment: Pick<DeploymentRow, "id" | "lockfile_hash">,
  readBundle: () => Promise<Pick<DeploymentRow, "bundle" | "source_map"> | undefined>,
  readArchive: () => Promise<Buffer | undefined>,
): Promise<{ bundleDir: string; nodeModules: string }> {
  const files = await readBundle();
  if (!files?.bundle || !deployment.lockfile_hash) {
    throw new AppError("no_live_deployment", "This deployment has no bundle.", { hint: "Run `ntn workers deploy`." });
  }
  let nodeModules = path.join(dirs.deps, deployment.lockfile_hash, "node_modules");
  if (!fs.existsSync(path.join(dirs.deps, deployment.lockfile_hash, ".complete"))) {
    // Built elsewhere: install the same tree from the stored source's lockfile.
    const archive = await readArchive();
    if (!archive) throw new Error(`The source archive of deployment ${deployment.id} is missing from the store.`);
    // In the data dir, where maintenance clears what a killed process leaves.
    fs.mkdirSync(dirs.builds, { recursive: true, mode: 0o700 });
    const tmp = fs.mkdtempSync(path.join(dirs.builds, "src-"));
    try {
      await extractArchive(archive, tmp);
      const installed = await ensureInstalled({ depsRoot: dirs.deps, cacheDir: dirs.npmCache, input: readInstallInput(tmp), onLog: () => {} });
      nodeModules = installed.nodeModules;
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }
  fs.mkdirSync(dirs.deployments, { recursive: true, mode: 0o755 });
  const tmp = fs.mkdtempSync(`${bundleDir}.tmp-`);
  fs.chmodSync(tmp, 0o755);
  fs.writeFileSync(path.join(tmp, "index.mjs"), files.bundle, { mode: 0o644 });
  if (files.source_map) fs.writeFileSync(path.join(tmp, "index.mjs.map"), files.source_map, { mode: 0o644 });
  fs.symlinkSync(fs.realpathSync(nodeModules), path.join(tmp, "node_modules"));
  try {
    fs.renameSync(tmp, bundleDir);
  } catch (error) {
    fs.rmSync(tmp, { recursive: true, force: true });
    if (!fs.existsSync(path.join(bundleDir, "index.mjs"))) throw error;
  }
  return { bundleDir, nodeModules: fs.realpathSync(path.join(bundleDir, "node_modules")) };
}
