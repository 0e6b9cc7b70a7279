/**
 * The source-archive reader, run in a worker thread by archive.ts: how much CPU and memory gunzip
 * and tar parsing take is up to whoever made the archive, so none of it runs on the thread that
 * answers requests, and the main thread can stop it at any point by terminating the thread.
 *
 * It imports nothing of ours at run time: it is loaded on its own, from dist or through tsx.
 */
import fs from "node:fs";
import path from "node:path";
import { Readable } from "node:stream";
import { parentPort, workerData } from "node:worker_threads";
import { createGunzip } from "node:zlib";
import { Parser, type ReadEntry } from "tar";
import type { ArchiveLimits, ArchiveListing } from "./archive.js";

/** What the main thread asks: read `source` through, and unpack it under `dir` if given. */
export interface WalkJob {
  source: { file: string } | { bytes: Uint8Array };
  dir?: string;
  limits: Omit<ArchiveLimits, "deadlineMs">;
}

/** The one message the worker sends back; a refusal is rebuilt into an AppError by archive.ts. */
export type WalkOutcome =
  | { ok: true; listing: ArchiveListing }
  | { ok: false; kind: "invalid" | "too_large"; reason: string };

class Refusal extends Error {
  constructor(
    readonly kind: "invalid" | "too_large",
    reason: string,
  ) {
    super(reason);
  }
}

const tooLarge = (limits: WalkJob["limits"]) =>
  new Refusal("too_large", `The source archive unpacks to more than ${limits.maxUnpackedBytes / 1048576} MiB.`);

const GZIP_MAGIC = Buffer.from([0x1f, 0x8b]);

function normalise(entryPath: string): string | undefined {
  const p = entryPath.replace(/\\/g, "/").replace(/^(\.\/)+/, "");
  if (p === "" || p === ".") return "";
  if (p.startsWith("/") || /^[A-Za-z]:/.test(p)) return undefined;
  if (p.split("/").some((segment) => segment === "..")) return undefined;
  return p.replace(/\/+$/, "");
}

/** The first bytes of a file or buffer, to tell gzip from a plain tar. */
function head(source: WalkJob["source"]): Buffer {
  if ("bytes" in source) return Buffer.from(source.bytes.subarray(0, 2));
  const fd = fs.openSync(source.file, "r");
  try {
    const bytes = Buffer.alloc(2);
    return bytes.subarray(0, fs.readSync(fd, bytes, 0, 2, 0));
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The decompressed stream, in bounded chunks. A plain (uncompressed) tar passes as it is, as tar's
 * own sniffing let it before.
 */
function tarStream(source: WalkJob["source"]): Readable {
  const raw: Readable =
    "bytes" in source
      ? Readable.from([Buffer.from(source.bytes.buffer, source.bytes.byteOffset, source.bytes.byteLength)])
      : fs.createReadStream(source.file, { highWaterMark: 256 * 1024 });
  if (!head(source).equals(GZIP_MAGIC)) return raw;
  const gunzip = createGunzip({ chunkSize: 256 * 1024 });
  raw.on("error", (error: Error) => gunzip.destroy(error));
  return raw.pipe(gunzip);
}

/** Writes one entry's data synchronously: this thread has nothing else to do, and it keeps memory flat. */
function writeEntry(target: string, entry: ReadEntry, onError: (error: unknown) => void): void {
  let fd: number | undefined;
  try {
    fs.mkdirSync(path.dirname(target), { recursive: true });
    // O_NOFOLLOW: nothing in the tree is a link (links are never unpacked), and nothing may become one.
    fd = fs.openSync(target, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW, 0o644);
  } catch (error) {
    onError(error);
    entry.resume();
    return;
  }
  const opened = fd;
  entry.on("data", (chunk: Buffer) => {
    try {
      fs.writeSync(opened, chunk);
    } catch (error) {
      onError(error);
    }
  });
  entry.on("end", () => fs.closeSync(opened));
}

async function walk(job: WalkJob): Promise<ArchiveListing> {
  const { limits, dir } = job;
  const listing: ArchiveListing = { files: [], unpackedBytes: 0, skipped: [] };
  let entries = 0;
  let failure: Refusal | undefined;
  const fail = (refusal: Refusal) => (failure ??= refusal);
  const invalid = (reason: string) => fail(new Refusal("invalid", reason));

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

  const parser = new Parser({
    strict: true,
    // Decompression is ours (counted below): tar must not inflate a second layer on its own.
    zstd: false,
    brotli: false,
    onReadEntry(entry: ReadEntry) {
      if (failure) return entry.resume();
      entries += 1;
      const relative = normalise(entry.path);
      if (relative === undefined) {
        invalid(`entry ${JSON.stringify(entry.path)} points outside the project.`);
        return entry.resume();
      }
      if (entries > limits.maxEntries) {
        invalid(`more than ${limits.maxEntries} entries.`);
        return entry.resume();
      }
      const isFile = entry.type === "File" || entry.type === "OldFile" || entry.type === "ContiguousFile";
      if (isFile && relative === "") {
        invalid("a file entry has no name.");
        return entry.resume();
      }
      if ((isFile || entry.type === "Directory") && relative !== "") {
        const problem = conflict(relative, isFile);
        if (problem) {
          invalid(problem);
          return entry.resume();
        }
      }
      if (isFile) {
        // The declared size refuses a huge entry before any of its data is read.
        listing.unpackedBytes += entry.size ?? 0;
        if (listing.unpackedBytes > limits.maxUnpackedBytes) {
          fail(tooLarge(limits));
          return entry.resume();
        }
        listing.files.push(relative);
        if (dir === undefined) return entry.resume();
        return writeEntry(path.join(dir, relative), entry, (error) =>
          invalid(`cannot unpack ${JSON.stringify(relative)}: ${(error as Error).message}`),
        );
      }
      if (entry.type !== "Directory") listing.skipped.push(`${relative} (${entry.type})`);
      entry.resume();
    },
  });
  parser.on("error", (error: Error) => invalid(error.message.replace(/^TAR_BAD_ARCHIVE: /, "")));
  parser.on("warn", (_code: string, message: string | Error) => invalid(typeof message === "string" ? message : message.message));
  // After the end-of-archive blocks tar keeps every further byte in one growing buffer (copied
  // again on each write): what follows them is only inflated (to check the gzip stream) and counted.
  let sawEnd = false;
  parser.on("eof", () => (sawEnd = true));
  // An aborted parser never ends: its error or abort settles the wait instead.
  const ended = new Promise<void>((resolve) => {
    parser.on("end", () => resolve());
    parser.on("abort", () => resolve());
    parser.on("error", () => resolve());
  });

  // The actual decompressed bytes are counted, not only the sizes the headers declare: zeros after
  // the end blocks, or padding, would otherwise inflate without bound.
  const maxStreamBytes = limits.maxUnpackedBytes + limits.maxOverheadBytes;
  let streamed = 0;
  let start = Buffer.alloc(0);
  const stream = tarStream(job.source);
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      if (start.length < GZIP_MAGIC.length) {
        start = Buffer.concat([start, chunk]).subarray(0, GZIP_MAGIC.length);
        if (start.equals(GZIP_MAGIC)) invalid("it is compressed twice.");
      }
      streamed += chunk.length;
      if (streamed > maxStreamBytes) fail(tooLarge(limits));
      if (failure) throw failure;
      if (sawEnd) continue;
      parser.write(chunk);
      if (failure) throw failure;
    }
  } catch (error) {
    if (error instanceof Refusal) throw error;
    // zlib's complaints about the input: a corrupt or truncated gzip stream.
    throw new Refusal("invalid", (error as Error).message);
  } finally {
    stream.destroy();
  }
  parser.end();
  if (!failure) await ended;
  if (failure) throw failure;
  if (entries === 0) throw new Refusal("invalid", "it holds no files.");
  return listing;
}

async function main(): Promise<void> {
  let outcome: WalkOutcome;
  try {
    outcome = { ok: true, listing: await walk(workerData as WalkJob) };
  } catch (error) {
    // Anything else (a bug, a file system error outside unpacking) goes to the main thread as an
    // uncaught error of this thread.
    if (!(error instanceof Refusal)) throw error;
    outcome = { ok: false, kind: error.kind, reason: error.message };
  }
  parentPort!.postMessage(outcome);
}

await main();
