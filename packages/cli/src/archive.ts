import fs from "node:fs";
import path from "node:path";
import { LocalError } from "./errors.js";

/**
 * What `deploy` leaves out of the source archive, as the official CLI does: directories named
 * node_modules or dist and every directory whose name starts with a dot, at any depth; files named
 * .env, .env.*, workers.json and workers.*.json, at any depth. .gitignore is not read.
 */
export function isExcludedDir(name: string): boolean {
  return name === "node_modules" || name === "dist" || name.startsWith(".");
}

export function isExcludedFile(name: string): boolean {
  return name === ".env" || name.startsWith(".env.") || name === "workers.json" || /^workers\..+\.json$/.test(name);
}

/** Regular files of the project, relative POSIX paths; symlinks are followed. */
export function listSourceFiles(root: string): string[] {
  const files: string[] = [];
  const walk = (dir: string, relative: string, seen: Set<string>) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const abs = path.join(dir, entry.name);
      const rel = relative ? `${relative}/${entry.name}` : entry.name;
      let stat: fs.Stats;
      try {
        stat = fs.statSync(abs);
      } catch (error) {
        throw new LocalError(`Failed to add ${rel} to archive`, { cause: error, hint: "Remove or fix the broken link." });
      }
      if (stat.isDirectory()) {
        if (isExcludedDir(entry.name)) continue;
        const real = fs.realpathSync(abs);
        if (seen.has(real)) continue; // a symlink loop
        walk(abs, rel, new Set(seen).add(real));
      } else if (stat.isFile()) {
        if (!isExcludedFile(entry.name)) files.push(rel);
      } else {
        throw new LocalError(`Failed to add ${rel} to archive`, { hint: "Only regular files and directories can be deployed." });
      }
    }
  };
  walk(root, "", new Set([fs.realpathSync(root)]));
  return files;
}

/** The project as `archive.tar.gz`: file entries only, modes kept, no owner names. */
export async function packSource(root: string): Promise<{ archive: Buffer; files: string[] }> {
  const files = listSourceFiles(root);
  // tar loads here, not with every ntn command.
  const { create } = await import("tar");
  const chunks: Buffer[] = [];
  const stream = create({ gzip: true, cwd: root, portable: true, follow: true, noDirRecurse: true }, files);
  for await (const chunk of stream as unknown as AsyncIterable<Buffer>) chunks.push(chunk);
  return { archive: Buffer.concat(chunks), files };
}
