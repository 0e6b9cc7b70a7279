import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Worker } from "node:worker_threads";
import { AppError } from "../errors.js";
import { PACKAGE_ROOT } from "../package-root.js";
import type { WalkJob, WalkOutcome } from "./archive-worker.js";

/**
 * Bounds on what reading a source archive may cost: a gzip bomb stops here, not on the disk, the
 * CPU or the memory of the server.
 */
export const ARCHIVE_LIMITS = {
  maxEntries: 20_000,
  /** The regular files' bytes, as declared by their headers. */
  maxUnpackedBytes: 256 * 1024 * 1024,
  /**
   * What the decompressed stream may hold beyond the files: headers, padding, end blocks. Counted
   * on the bytes gunzip actually produces, so zeros past the end of the archive count too.
   */
  maxOverheadBytes: 64 * 1024 * 1024,
  /** The reader thread is terminated after this long, whatever it is doing. */
  deadlineMs: 60_000,
};

export type ArchiveLimits = typeof ARCHIVE_LIMITS;

export interface ArchiveListing {
  /** Regular files, as relative POSIX paths without a leading `./`. */
  files: string[];
  unpackedBytes: number;
  /** Entries left out (links, devices), for the build log. */
  skipped: string[];
}

export interface ArchiveOptions {
  /** Tighter (or, in tests, other) limits than ARCHIVE_LIMITS. */
  limits?: Partial<ArchiveLimits>;
}

const HINT = "Leave build output and large data out of the project folder.";

const invalid = (reason: string) =>
  new AppError("archive_invalid", `The source archive is not a valid .tar.gz: ${reason}`, {
    hint: "Deploy again with `ntn workers deploy`; it builds the archive from your project folder.",
  });

/** Checks an uploaded archive without writing anything. */
export async function inspectArchive(archive: Buffer, options: ArchiveOptions = {}): Promise<ArchiveListing> {
  return read({ source: { bytes: archive } }, options);
}

/** Checks an archive held in a file (an upload as it arrived) without loading it into memory. */
export async function inspectArchiveFile(file: string, options: ArchiveOptions = {}): Promise<ArchiveListing> {
  return read({ source: { file } }, options);
}

/**
 * Unpacks regular files under `dir` (which must exist and be empty). On a refusal some files may
 * already be written: the caller removes `dir`.
 */
export async function extractArchive(archive: Buffer, dir: string, options: ArchiveOptions = {}): Promise<ArchiveListing> {
  return read({ source: { bytes: archive }, dir: path.resolve(dir) }, options);
}

/** extractArchive for an archive held in a file. */
export async function extractArchiveFile(file: string, dir: string, options: ArchiveOptions = {}): Promise<ArchiveListing> {
  return read({ source: { file }, dir: path.resolve(dir) }, options);
}

/**
 * How the reader thread starts: the compiled entry in the package's dist folder (the bundle's own
 * folder holds only main.mjs). Run from its TypeScript source without a build, the source through
 * tsx, which takes a few hundred milliseconds more per thread.
 */
const COMPILED_READER = path.join(PACKAGE_ROOT, "dist", "builder", "archive-worker.js");
function readerEntry(): string | URL {
  if (!import.meta.url.endsWith(".ts") || fs.existsSync(COMPILED_READER)) return COMPILED_READER;
  return new URL("./archive-worker.from-source.mjs", import.meta.url);
}

/** Reader threads at once: each may keep a core busy until its limits stop it. */
const MAX_READERS = Math.max(2, os.availableParallelism());
let readers = 0;
const waiting: (() => void)[] = [];

async function slot(): Promise<() => void> {
  if (readers >= MAX_READERS) await new Promise<void>((resolve) => waiting.push(resolve));
  readers += 1;
  return () => {
    readers -= 1;
    waiting.shift()?.();
  };
}

async function read(job: Omit<WalkJob, "limits">, options: ArchiveOptions): Promise<ArchiveListing> {
  const { deadlineMs, ...limits } = { ...ARCHIVE_LIMITS, ...options.limits };
  const release = await slot();
  try {
    return await inThread({ ...job, limits }, deadlineMs);
  } finally {
    release();
  }
}

function inThread(job: WalkJob, deadlineMs: number): Promise<ArchiveListing> {
  const worker = new Worker(readerEntry(), {
    workerData: job,
    // The server's own flags (an inspector, a loader) are not the reader's.
    execArgv: [],
    // Buffers live outside this heap; the heap holds the listing and the path sets.
    resourceLimits: { maxOldGenerationSizeMb: 256, maxYoungGenerationSizeMb: 32 },
  });
  return new Promise<ArchiveListing>((resolve, reject) => {
    let settled = false;
    // The thread is gone before the caller goes on: nothing reads or writes after the answer.
    const settle = (outcome: () => ArchiveListing) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      void worker.terminate().then(
        () => {
          try {
            resolve(outcome());
          } catch (error) {
            reject(error);
          }
        },
        (error: unknown) => reject(error),
      );
    };
    const timer = setTimeout(
      () =>
        settle(() => {
          throw new AppError("archive_too_large", `Reading the source archive took longer than ${Math.round(deadlineMs / 1000)} s: it is too large or too heavily compressed.`, { hint: HINT });
        }),
      deadlineMs,
    );
    worker.once("message", (outcome: WalkOutcome) =>
      settle(() => {
        if (outcome.ok) return outcome.listing;
        if (outcome.kind === "invalid") throw invalid(outcome.reason);
        throw new AppError("archive_too_large", outcome.reason, { hint: HINT });
      }),
    );
    worker.once("error", (error: Error & { code?: string }) =>
      settle(() => {
        if (error.code === "ERR_WORKER_OUT_OF_MEMORY") {
          throw new AppError("archive_too_large", "Reading the source archive needs more memory than allowed.", { hint: HINT });
        }
        throw new Error(`The archive reader failed: ${error.message}`, { cause: error });
      }),
    );
    worker.once("exit", (code) =>
      settle(() => {
        throw new Error(`The archive reader stopped (exit code ${code}) without an answer.`);
      }),
    );
  });
}
