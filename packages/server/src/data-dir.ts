import path from "node:path";

/**
 * Where a data dir keeps what builds, runs and uploads need on disk: the one map of its folders,
 * for the builder, the executor, the uploads service and maintenance alike.
 */
export function layout(dataDir: string) {
  return {
    /** Materialised deployments, one folder each (builder/materialise.ts). */
    deployments: path.join(dataDir, "deployments"),
    /** Installed dependency trees, one folder per lockfile hash (builder/install.ts). */
    deps: path.join(dataDir, "deps"),
    /** npm caches, one per workspace sandbox index. */
    npmCache: path.join(dataDir, "npm-cache"),
    /** Builds in progress, one folder each. */
    builds: path.join(dataDir, "builds"),
    /** Worker processes' scratch folders, named `<server pid>-...`. */
    scratch: path.join(dataDir, "scratch"),
    /** The worker process entry, for processes that read it from the data dir. */
    runtime: path.join(dataDir, "runtime"),
    /** Source archives while they arrive and are inspected (workers/uploads.ts). */
    uploadsIncoming: path.join(dataDir, "uploads-incoming"),
  };
}

export type DataDirLayout = ReturnType<typeof layout>;
