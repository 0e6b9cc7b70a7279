import fs from "node:fs";
import path from "node:path";
import type { Logger } from "../log.js";
import { layout } from "../builder/materialise.js";

/** The unprivileged user worker processes run as when the server runs as root: nobody. */
const DEFAULT_SANDBOX_UID = 65534;

/**
 * When the server runs as root, worker processes run as another user (WORKYARD_SANDBOX_UID, by
 * default nobody), so beyond the permission model the kernel keeps them from the server's 0600
 * files and from signalling its processes. The data dir then lets others traverse (0711) without
 * listing it, and deployments and installed trees are world-readable. Otherwise: undefined.
 */
export function sandboxUser(dataDir: string, log: Logger, env: NodeJS.ProcessEnv = process.env): { uid: number; gid: number } | undefined {
  if (typeof process.getuid !== "function" || process.getuid() !== 0) return undefined;
  if (env.WORKYARD_SANDBOX_UID === "0") {
    log.warn("WORKYARD_SANDBOX_UID=0: worker processes run as root, guarded by the permission model only");
    return undefined;
  }
  const blocked = untraversableAncestor(dataDir);
  if (blocked) {
    log.warn(
      { dataDir, blocked },
      "worker processes run as root (guarded by the permission model only): other users cannot traverse the data dir; use a data dir such as /var/lib/workyard to run them as an unprivileged user",
    );
    return undefined;
  }
  const uid = env.WORKYARD_SANDBOX_UID ? Number(env.WORKYARD_SANDBOX_UID) : DEFAULT_SANDBOX_UID;
  const gid = env.WORKYARD_SANDBOX_GID ? Number(env.WORKYARD_SANDBOX_GID) : uid;
  const dirs = layout(dataDir);
  fs.chmodSync(dataDir, 0o711);
  for (const dir of [dirs.deployments, dirs.deps]) {
    fs.mkdirSync(dir, { recursive: true });
    fs.chmodSync(dir, 0o755);
  }
  fs.mkdirSync(dirs.scratch, { recursive: true });
  fs.chmodSync(dirs.scratch, 0o711);
  return { uid, gid };
}

/** The first ancestor of `dir` that other users cannot enter (no o+x), if any. */
function untraversableAncestor(dir: string): string | undefined {
  let current = path.dirname(path.resolve(dir));
  for (;;) {
    if ((fs.statSync(current).mode & 0o001) === 0) return current;
    const parent = path.dirname(current);
    if (parent === current) return undefined;
    current = parent;
  }
}
