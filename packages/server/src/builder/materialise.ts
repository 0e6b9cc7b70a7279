import fs from "node:fs";
import path from "node:path";
import { layout, type DataDirLayout } from "../data-dir.js";
import { AppError } from "../errors.js";
import type { DeploymentRow } from "../store/schema.js";
import type { Bundle } from "./bundle.js";

export interface Materialised {
  bundleDir: string;
  nodeModules: string;
}

const inFlight = new Map<string, Promise<Materialised>>();

/**
 * A deployment's files on this machine, made from what the store holds: `index.mjs`, its map and a
 * `node_modules` link to the installed tree (which `installTree` makes from the stored source's
 * lockfile when this machine has not installed it yet). Any server process can run any deployment
 * this way. The folder is readable by the workspace's uid only (and the server's).
 */
export function materialise(options: {
  dataDir: string;
  deployment: Pick<DeploymentRow, "id" | "lockfile_hash">;
  user: { uid: number; gid: number } | undefined;
  readBundle: () => Promise<Bundle | undefined>;
  /** The installed tree of the deployment's lockfile, installed on this machine if need be. */
  installTree: (hash: string) => Promise<string>;
}): Promise<Materialised> {
  const dirs = layout(options.dataDir);
  const bundleDir = path.join(dirs.deployments, options.deployment.id);
  const link = path.join(bundleDir, "node_modules");
  if (fs.existsSync(path.join(bundleDir, "index.mjs")) && fs.existsSync(link)) {
    return Promise.resolve({ bundleDir, nodeModules: fs.realpathSync(link) });
  }
  let pending = inFlight.get(options.deployment.id);
  if (!pending) {
    pending = write(dirs, bundleDir, options).finally(() => inFlight.delete(options.deployment.id));
    inFlight.set(options.deployment.id, pending);
  }
  return pending;
}

async function write(dirs: DataDirLayout, bundleDir: string, options: Parameters<typeof materialise>[0]): Promise<Materialised> {
  const { deployment, user } = options;
  const bundle = await options.readBundle();
  if (!bundle || !deployment.lockfile_hash) {
    throw new AppError("no_live_deployment", "This deployment has no bundle.", { hint: "Run `ntn workers deploy`." });
  }
  const nodeModules = await options.installTree(deployment.lockfile_hash);
  fs.mkdirSync(dirs.deployments, { recursive: true, mode: 0o711 });
  const tmp = fs.mkdtempSync(`${bundleDir}.tmp-`);
  // As root: the server owns the files and the workspace's group may read them; no one else.
  const fileMode = user ? 0o640 : 0o600;
  fs.writeFileSync(path.join(tmp, "index.mjs"), bundle.code, { mode: fileMode });
  if (bundle.sourceMap) fs.writeFileSync(path.join(tmp, "index.mjs.map"), bundle.sourceMap, { mode: fileMode });
  fs.symlinkSync(nodeModules, path.join(tmp, "node_modules"));
  if (user) {
    for (const name of ["index.mjs", "index.mjs.map"]) {
      if (fs.existsSync(path.join(tmp, name))) fs.chownSync(path.join(tmp, name), 0, user.gid);
    }
    fs.chownSync(tmp, 0, user.gid);
  }
  fs.chmodSync(tmp, user ? 0o750 : 0o700);
  try {
    fs.renameSync(tmp, bundleDir);
  } catch (error) {
    fs.rmSync(tmp, { recursive: true, force: true });
    if (!fs.existsSync(path.join(bundleDir, "index.mjs"))) throw error;
  }
  return { bundleDir, nodeModules: fs.realpathSync(path.join(bundleDir, "node_modules")) };
}
