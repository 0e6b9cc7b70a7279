import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/**
 * The server package's folder, found from wherever this module runs: its TypeScript sources
 * (tests), its compiled files, or the single-file bundle `ntn server` loads. Files the server
 * reads at run time (the sandbox entry, the provider catalog) are found from here.
 */
function findPackageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = path.join(dir, "package.json");
    if (fs.existsSync(manifest) && (JSON.parse(fs.readFileSync(manifest, "utf8")) as { name?: string }).name === "@workyard/server") return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error("Cannot find the @workyard/server package folder.");
    dir = parent;
  }
}

export const PACKAGE_ROOT = findPackageRoot();
