import fs from "node:fs";
import path from "node:path";
import { Parser, type ReadEntry } from "tar";
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
  const listing: ArchiveListing = { files: [], unpackedBytes: 0, skipped: [] };
  let entries = 0;
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
        if (entry.type === "File" || entry.type === "OldFile" || entry.type === "ContiguousFile") {
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
  const listing = await walkArchive(archive, (relative, entry) => {
    const target = path.join(dir, relative);
    fs.mkdirSync(path.dirname(target), { recursive: true });
    const chunks: Buffer[] = [];
    entry.on("data", (chunk: Buffer) => chunks.push(chunk));
    writes.push(
      new Promise((resolve, reject) => {
        entry.on("end", () => {
          fs.promises.writeFile(target, Buffer.concat(chunks), { mode: 0o644 }).then(resolve, reject);
        });
      }),
    );
  });
  await Promise.all(writes);
  return listing;
}
