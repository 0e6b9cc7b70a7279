import fs from "node:fs";
import path from "node:path";
import { AppError } from "../errors.js";
import type { Isolation } from "../executor/isolation.js";
import type { DeploymentRow } from "../store/schema.js";
import type { Keyring } from "../vault/keyring.js";
import { aad, openText, seal, type Sealed } from "../vault/seal.js";
import { chownTree, runSandboxed, type BuildTools } from "./build-sandbox.js";

/** A deployment's code as esbuild made it (build-entry.mts): one ESM file and its source map. */
export interface Bundle {
  code: string;
  sourceMap: string;
}

type Owner = Pick<DeploymentRow, "workspace_id" | "worker_id"> & { id: string };

/** The worker's code is the tenant's data: sealed like a secret before it is stored. */
export function sealBundle(keyring: Keyring, deployment: Owner, bundle: Bundle): Sealed {
  return seal(keyring, JSON.stringify(bundle), aad.bundle(deployment.workspace_id, deployment.worker_id, deployment.id));
}

/** The stored bundle: opened, or as rows from before 0.2 hold it in clear; undefined when none. */
export function openBundle(
  keyring: Keyring,
  deploymentId: string,
  row: Pick<DeploymentRow, "workspace_id" | "worker_id" | "bundle" | "source_map" | "bundle_key_id" | "bundle_sealed">,
): Bundle | undefined {
  if (row.bundle_key_id && row.bundle_sealed) {
    const text = openText(keyring, { keyId: row.bundle_key_id, sealed: row.bundle_sealed }, aad.bundle(row.workspace_id, row.worker_id, deploymentId));
    return JSON.parse(text) as Bundle;
  }
  if (row.bundle) return { code: row.bundle, sourceMap: row.source_map ?? "" };
  return undefined;
}

/** Where a bundle step sees its files inside the namespaces. */
const INSIDE = { esbuild: "/workyard/esbuild", project: "/project", out: "/out" } as const;

/** A bundle larger than this is refused (it is loaded into every worker process). */
const BUNDLE_LIMIT = 32 * 1024 * 1024;

export interface BundleRun {
  isolation: Isolation;
  tools: BuildTools;
  user: { uid: number; gid: number } | undefined;
  projectDir: string;
  outDir: string;
  cpuCores: number;
  onLog(line: string): void;
}

/**
 * `src/index.ts` to one ESM file with esbuild's binary alone, in namespaces with no network, the
 * project read-only and the output folder: packages stay external (the SDK must load from
 * node_modules), with a source map whose sources read `/src/...`, so a worker's stack traces point
 * at its own files and lines. Everything bundled must come from the project: esbuild's metafile
 * lists each input, and one outside the project fails the build.
 */
export async function bundleProject(run: BundleRun): Promise<Bundle> {
  const entry = path.join(run.projectDir, "src", "index.ts");
  if (!fs.existsSync(entry)) {
    throw new AppError("build_failed", "The project has no src/index.ts.", {
      hint: "A worker's entry is src/index.ts, exporting `new Worker()` as default.",
    });
  }
  fs.mkdirSync(run.outDir, { recursive: true, mode: 0o700 });
  if (run.user) {
    // esbuild runs as the workspace's uid: the project is its to read, the output its to write.
    chownTree(run.projectDir, run.user);
    fs.chownSync(run.outDir, run.user.uid, run.user.gid);
  }
  const flags = (out: string) => [
    "src/index.ts",
    "--bundle",
    "--format=esm",
    "--platform=node",
    "--target=node20",
    "--packages=external",
    "--sourcemap=linked",
    "--sources-content=true",
    `--outfile=${out}/index.mjs`,
    `--metafile=${out}/meta.json`,
    "--log-level=warning",
    "--log-limit=20",
    "--color=false",
  ];
  const errors: string[] = [];
  const code = await runSandboxed({
    isolation: run.isolation,
    user: run.user,
    mounts: [
      { source: run.tools.esbuild, target: INSIDE.esbuild },
      { source: run.projectDir, target: INSIDE.project },
      { source: run.outDir, target: INSIDE.out, writable: true },
    ],
    command: [INSIDE.esbuild, ...flags(INSIDE.out)],
    cwd: INSIDE.project,
    plain: { command: [run.tools.esbuild, ...flags(run.outDir)], cwd: run.projectDir },
    env: { PATH: "/usr/bin:/bin" },
    timeoutMs: 5 * 60 * 1000,
    cpuCores: run.cpuCores,
    onLine: (_stream, line) => {
      const error = /^✘ \[ERROR\] (.*)$/.exec(line);
      if (error?.[1]) errors.push(error[1]);
      run.onLog(line);
    },
  });
  if (code !== 0) {
    throw new AppError("build_failed", `Bundling src/index.ts failed: ${errors[0] ?? `esbuild exited with code ${code}`}`, {
      hint: "Fix the error shown in the build log and deploy again.",
    });
  }
  checkInputs(run.projectDir, path.join(run.outDir, "meta.json"));
  const file = path.join(run.outDir, "index.mjs");
  if (fs.statSync(file).size > BUNDLE_LIMIT) {
    throw new AppError("build_failed", `The bundle is larger than ${BUNDLE_LIMIT / 1048576} MiB.`, {
      hint: "Packages stay in node_modules; check that src/ does not import large data files.",
    });
  }
  const mapFile = path.join(run.outDir, "index.mjs.map");
  let sourceMap = "";
  if (fs.existsSync(mapFile) && fs.statSync(mapFile).size <= BUNDLE_LIMIT) {
    // Sources read `/src/...`: stack traces name the worker's own files, not build paths.
    const parsed = JSON.parse(fs.readFileSync(mapFile, "utf8")) as { sources: string[] };
    parsed.sources = parsed.sources.map((source) => `/${path.posix.relative(INSIDE.project, path.posix.resolve(INSIDE.out, source))}`);
    sourceMap = JSON.stringify(parsed);
  }
  return { code: fs.readFileSync(file, "utf8"), sourceMap };
}

/** Every file esbuild bundled lies inside the project (the metafile names them from its root). */
function checkInputs(projectDir: string, metafile: string): void {
  const meta = JSON.parse(fs.readFileSync(metafile, "utf8")) as { inputs: Record<string, unknown> };
  for (const input of Object.keys(meta.inputs)) {
    // Virtual inputs (esbuild's own runtime helpers) carry a namespace prefix.
    if (/^[a-z-]+:/.test(input)) continue;
    const resolved = path.posix.resolve(INSIDE.project, input);
    if (resolved !== INSIDE.project && !resolved.startsWith(`${INSIDE.project}/`)) {
      throw new AppError("build_failed", `An import resolves outside the project (${input}); a worker may import only its own files and its packages.`, {
        hint: `Move the file into the project (${path.basename(projectDir)}/src) or install it as a package.`,
      });
    }
  }
}
