import fs from "node:fs";
import path from "node:path";
import type { ReadEntry } from "tar";
import { AppError } from "../errors.js";

/** Bounds on what a source archive may unpack to: a gzip bomb stops here, not on the disk. */
export const ARCHIVE_LIMITS = {
  maxEntries: 20_000,
  maxUnpackedBytes: 256 * 1024 * 1024,
};

export interface ArchiveListing {
  /** Regular files, as relative POSIX paths without a leading `./`. */
  files: string[];
  unpackedBytes: number;
  /** Entries left out (links, devices), for the build log. */
  skipped: string[];
}

function normalise(entryPath: string): string | undefined {
  const p = entryPath.replace(/\\/g, "/").replace(/^(\.\/)+/, "");
  if (p === "" || p === ".") return "";
  if (p.startsWith("/") || /^[A-Za-z]:/.test(p)) return undefined;
  if (p.split("/").some((segment) => segment === "..")) return undefined;
  return p.replace(/\/+$/, "");
}

const invalid = (reason: string) =>
  new AppError("archive_invalid", `The source archive is not a valid .tar.gz: ${reason}`, {
    hint: "Deploy again with `ntn workers deploy`; it builds the archive from your project folder.",
  });

/**
 * Reads a gzipped tar archive through, entry by entry, calling `onFile` for each regular file.
 * Rejects corrupt data, unsafe paths and archives over the limits before anything is kept.
 */
async function walkArchive(
  archive: Buffer,
  onFile: (relative: string, entry: ReadEntry) => void,
): Promise<ArchiveListing> {
  // tar loads on the first upload, not when the server starts.
  const { Parser } = await import("tar");
  const listing: ArchiveListing = { files: [], unpackedBytes: 0, skipped: [] };
  let entries = 0;
  // A path cannot be both a file and a directory: such an archive could never be unpacked.
  const filePaths = new Set<string>();
  const dirPaths = new Set<string>();
  const conflict = (relative: string, isFile: boolean): string | undefined => {
    const parents = relative.split("/").slice(0, -1).map((_, i, parts) => parts.slice(0, i + 1).join("/"));
    const parentFile = parents.find((p) => filePaths.has(p));
    if (parentFile) return `${JSON.stringify(relative)} lies under the file ${JSON.stringify(parentFile)}.`;
    if (isFile && dirPaths.has(relative)) return `${JSON.stringify(relative)} is both a file and a directory.`;
    if (!isFile && filePaths.has(relative)) return `${JSON.stringify(relative)} is both a file and a directory.`;
    for (const p of parents) dirPaths.add(p);
    if (isFile) filePaths.add(relative);
    else dirPaths.add(relative);
    return undefined;
  };
  return new Promise((resolve, reject) => {
    let failed = false;
    const fail = (error: Error) => {
      if (failed) return;
      failed = true;
      reject(error);
    };
    const parser = new Parser({
      strict: true,
      onReadEntry(entry: ReadEntry) {
        if (failed) return entry.resume();
        entries += 1;
        const relative = normalise(entry.path);
        if (relative === undefined) {
          fail(invalid(`entry ${JSON.stringify(entry.path)} points outside the project.`));
          return entry.resume();
        }
        if (entries > ARCHIVE_LIMITS.maxEntries) {
          fail(invalid(`more than ${ARCHIVE_LIMITS.maxEntries} entries.`));
          return entry.resume();
        }
        const isFile = entry.type === "File" || entry.type === "OldFile" || entry.type === "ContiguousFile";
        if (isFile && relative === "") {
          fail(invalid("a file entry has no name."));
          return entry.resume();
        }
        if ((isFile || entry.type === "Directory") && relative !== "") {
          const problem = conflict(relative, isFile);
          if (problem) {
            fail(invalid(problem));
            return entry.resume();
          }
        }
        if (isFile) {
          listing.unpackedBytes += entry.size ?? 0;
          if (listing.unpackedBytes > ARCHIVE_LIMITS.maxUnpackedBytes) {
            fail(
              new AppError("archive_too_large", `The source archive unpacks to more than ${ARCHIVE_LIMITS.maxUnpackedBytes / 1048576} MiB.`, {
                hint: "Leave build output and large data out of the project folder.",
              }),
            );
            return entry.resume();
          }
          listing.files.push(relative);
          onFile(relative, entry);
          return;
        }
        if (entry.type !== "Directory") listing.skipped.push(`${relative} (${entry.type})`);
        entry.resume();
      },
    });
    parser.on("error", (error: Error) => fail(invalid(error.message.replace(/^TAR_BAD_ARCHIVE: /, ""))));
    parser.on("warn", (_code: string, message: string | Error) =>
      fail(invalid(typeof message === "string" ? message : message.message)),
    );
    parser.on("end", () => {
      if (failed) return;
      if (entries === 0) return fail(invalid("it holds no files."));
      resolve(listing);
    });
    parser.end(archive);
  });
}

/** Checks an uploaded archive without writing anything. */
export async function inspectArchive(archive: Buffer): Promise<ArchiveListing> {
  return walkArchive(archive, (_relative, entry) => entry.resume());
}

/** Unpacks regular files and directories under `dir` (which must exist and be empty). */
export async function extractArchive(archive: Buffer, dir: string): Promise<ArchiveListing> {
  const writes: Promise<void>[] = [];
  let failure: AppError | undefined;
  const cannot = (relative: string, error: unknown) =>
    (failure ??= invalid(`cannot unpack ${JSON.stringify(relative)}: ${(error as Error).message}`));
  const listing = await walkArchive(archive, (relative, entry) => {
    const target = path.join(dir, relative);
    try {
      fs.mkdirSync(path.dirname(target), { recursive: true });
    } catch (error) {
      cannot(relative, error);
      entry.resume();
      return;
    }
    const chunks: Buffer[] = [];
    entry.on("data", (chunk: Buffer) => chunks.push(chunk));
    writes.push(
      new Promise((resolve) => {
        entry.on("end", () => {
          fs.promises.writeFile(target, Buffer.concat(chunks), { mode: 0o644 }).then(resolve, (error: unknown) => {
            cannot(relative, error);
            resolve();
          });
        });
      }),
    );
  });
  await Promise.all(writes);
  if (failure) throw failure;
  return listing;
}
