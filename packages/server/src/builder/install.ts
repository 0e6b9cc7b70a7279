import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { AppError } from "../errors.js";
import { checkInstalledTree } from "./dependencies.js";

/** The files that decide an installed tree: npm runs in a folder holding these two alone. */
export interface InstallInput {
  packageJson: Buffer;
  lockfile: Buffer | undefined;
}

export function readInstallInput(projectDir: string): InstallInput {
  const read = (name: string) => {
    try {
      return fs.readFileSync(path.join(projectDir, name));
    } catch {
      return undefined;
    }
  };
  const packageJson = read("package.json");
  if (!packageJson) {
    throw new AppError("build_failed", "The project has no package.json.", {
      hint: "A worker project needs package.json with @notionhq/workers; `ntn workers new` makes one.",
    });
  }
  return { packageJson, lockfile: read("package-lock.json") };
}

/**
 * Installed trees are shared by this hash: the lockfile, the registry it comes from and Node's
 * major version; an unchanged lockfile installs nothing. Without a lockfile, what npm resolves
 * depends on the moment: such a tree is the workspace's own (its id is in the hash), never shared.
 */
export function treeHash(input: InstallInput, registry: string, workspaceId: string): string {
  const hash = crypto.createHash("sha256");
  hash.update(`workyard deps v2\0node${process.versions.node.split(".")[0]}\0${registry}\0`);
  hash.update(input.lockfile ? "lock\0" : `nolock\0${workspaceId}\0`);
  hash.update(input.lockfile ?? input.packageJson);
  return hash.digest("hex").slice(0, 32);
}

/**
 * `<depsRoot>/<hash>/node_modules` when this machine has the tree, else undefined. A tree found is
 * touched: the collector (maintenance.ts) keeps what was used within its grace period, so a build
 * that just picked an old tree up never loses it before its deployment is committed.
 */
export function installedTree(depsRoot: string, hash: string): string | undefined {
  const dir = path.join(depsRoot, hash);
  if (!fs.existsSync(path.join(dir, ".complete"))) return undefined;
  const now = new Date();
  try {
    fs.utimesSync(dir, now, now);
  } catch {
    // collected this very moment: the caller installs it again
  }
  return fs.realpathSync(path.join(dir, "node_modules"));
}

/**
 * Takes the node_modules a build installed into its project and makes it the shared tree of
 * `hash`: checked (no link leaves it), handed to the server's user and made read-only for
 * everyone else, then renamed into place in one step, so a crash or a concurrent install by
 * another process never leaves a half tree under the final name. Returns its real path.
 */
export function adoptTree(depsRoot: string, hash: string, installed: string): string {
  checkInstalledTree(installed);
  fs.mkdirSync(depsRoot, { recursive: true, mode: 0o755 });
  const finalDir = path.join(depsRoot, hash);
  const existing = installedTree(depsRoot, hash);
  if (existing) {
    fs.rmSync(installed, { recursive: true, force: true });
    return existing;
  }
  const work = fs.mkdtempSync(`${finalDir}.tmp-`);
  try {
    fs.renameSync(installed, path.join(work, "node_modules"));
    freeze(path.join(work, "node_modules"));
    fs.chmodSync(work, 0o755);
    fs.writeFileSync(path.join(work, ".complete"), new Date().toISOString(), { mode: 0o644 });
    try {
      fs.renameSync(work, finalDir);
    } catch (error) {
      // Another process installed the same tree first: use theirs.
      if (!installedTree(depsRoot, hash)) throw error;
      fs.rmSync(work, { recursive: true, force: true });
    }
    return fs.realpathSync(path.join(finalDir, "node_modules"));
  } catch (error) {
    fs.rmSync(work, { recursive: true, force: true });
    throw error;
  }
}

/**
 * Owned by the server's user (the workspace that installed it can no longer change it), readable
 * by all: the tree is shared by every workspace whose lockfile is the same, and mounted read-only.
 */
function freeze(dir: string): void {
  const uid = process.getuid?.() ?? -1;
  const gid = process.getgid?.() ?? -1;
  const visit = (p: string) => {
    const stat = fs.lstatSync(p);
    if (uid >= 0 && (stat.uid !== uid || stat.gid !== gid)) fs.lchownSync(p, uid, gid);
    if (stat.isSymbolicLink()) return;
    if (stat.isDirectory()) {
      fs.chmodSync(p, 0o755);
      for (const name of fs.readdirSync(p)) visit(path.join(p, name));
    } else {
      fs.chmodSync(p, stat.mode & 0o111 ? 0o755 : 0o644);
    }
  };
  visit(dir);
}
