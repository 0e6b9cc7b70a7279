import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Readable } from "node:stream";
import type { Kysely } from "kysely";
import { inspectArchiveFile } from "../builder/archive.js";
import { layout } from "../data-dir.js";
import { AppError } from "../errors.js";
import { newId, safeEqual } from "../ids.js";
import type { Database, UploadRow } from "../store/schema.js";
import * as uploadsStore from "../store/uploads.js";
import type { Keyring } from "../vault/keyring.js";
import { aad, open, seal } from "../vault/seal.js";

/** How long the fields of CreateWorker / UpdateWorker stay valid. */
export const UPLOAD_TTL_MS = 15 * 60 * 1000;

/**
 * Where archives wait while they arrive and are inspected, one private file each, removed once
 * stored or refused. Files a crashed process left here can go at any time: nothing reads them later.
 */
export function incomingUploadsDir(dataDir: string): string {
  return layout(dataDir).uploadsIncoming;
}

/** What CreateWorker and UpdateWorker answer: where to POST the archive, and the fields to send. */
export interface UploadTicket {
  url: string;
  fields: { uploadId: string; signature: string };
}

/** An archive that arrived whole and within the size limit, waiting in a private file. */
export interface StagedUpload {
  /** The archive's size in bytes, as sent. */
  size: number;
  /** Inspects the archive (off the main thread), seals it and stores it: the fields are then used up. */
  store(): Promise<void>;
  /** Removes the file; safe to call after store() and more than once. */
  discard(): Promise<void>;
}

/** The signing key is derived from a master key, so every server process sharing the keys can verify. */
function signingKey(master: Buffer): Buffer {
  return Buffer.from(crypto.hkdfSync("sha256", master, Buffer.alloc(0), "workyard upload signature v1", 32));
}

function sign(key: Buffer, upload: { workspace_id: string; worker_id: string; id: string; expires_at: number }): string {
  return crypto
    .createHmac("sha256", key)
    .update(`${upload.workspace_id}\0${upload.worker_id}\0${upload.id}\0${upload.expires_at}`)
    .digest("base64url");
}

/** The one answer to an upload this server did not issue, or whose fields were changed. */
const uploadForged = () =>
  new AppError("upload_signature_invalid", "This upload was not issued by this server, or its fields were changed.", {
    hint: "Run `ntn workers deploy` again to get a fresh upload.",
  });

const alreadyUsed = () =>
  new AppError("upload_already_used", "These upload fields were already used.", {
    hint: "Run `ntn workers deploy` again to get a fresh upload.",
  });

const expired = () =>
  new AppError("upload_expired", "These upload fields have expired (they last 15 minutes).", {
    hint: "Run `ntn workers deploy` again to get a fresh upload.",
  });

/**
 * An upload's archive bytes as they were sent: opened when sealed; rows stored before archives
 * were sealed (`archive_key_id` null) hold them in clear and are returned as they are.
 */
export function openArchive<T extends uploadsStore.StoredArchive>(keyring: Keyring, row: T): T;
export function openArchive<T extends uploadsStore.StoredArchive>(keyring: Keyring, row: T | undefined): T | undefined;
export function openArchive<T extends uploadsStore.StoredArchive>(keyring: Keyring, row: T | undefined): T | undefined {
  if (!row || row.archive === null || row.archive_key_id === null) return row;
  const archive = open(keyring, { keyId: row.archive_key_id, sealed: row.archive }, aad.archive(row.workspace_id, row.worker_id, row.id));
  return { ...row, archive };
}

/** The opened archive of an upload, for a process that unpacks a deployment's source. */
export async function readUploadArchive(db: Kysely<Database>, keyring: Keyring, uploadId: string): Promise<Buffer | undefined> {
  return openArchive(keyring, await uploadsStore.readArchive(db, uploadId))?.archive ?? undefined;
}

export interface UploadService {
  issue(workspaceId: string, workerId: string, publicUrl: string): Promise<UploadTicket>;
  /**
   * Takes the archive of an issued upload as it arrives. The fields are checked first (signature,
   * single use, expiry; `uploadId` is the id the URL names), before a byte of `archive` is read;
   * then it streams to a private file and is refused as soon as it passes `maxBytes`.
   */
  accept(
    uploadId: string,
    fields: { uploadId?: string | undefined; signature?: string | undefined },
    archive: Readable,
    limits: { maxBytes: number },
  ): Promise<StagedUpload>;
}

export function createUploadService(
  db: Kysely<Database>,
  keyring: Keyring,
  options: {
    now?: () => number;
    /** The server's data dir: arriving archives wait under incomingUploadsDir(dataDir). */
    dataDir?: string;
  } = {},
): UploadService {
  const now = options.now ?? Date.now;
  // Without a data dir, a private directory of its own: a fixed name under the shared temporary
  // directory could be made first by another user, who could then swap files in it.
  let privateTemp: Promise<string> | undefined;
  async function incomingDir(): Promise<string> {
    if (!options.dataDir) return (privateTemp ??= fs.promises.mkdtemp(path.join(os.tmpdir(), "workyard-uploads-")));
    const dir = incomingUploadsDir(options.dataDir);
    await fs.promises.mkdir(dir, { recursive: true, mode: 0o700 });
    return dir;
  }

  /** Signature (under any key of the keyring: uploads survive a key rotation), single use, expiry. */
  async function authorize(
    uploadId: string,
    fields: { uploadId?: string | undefined; signature?: string | undefined },
  ): Promise<Omit<UploadRow, "archive">> {
    const { signature } = fields;
    if (!signature || fields.uploadId !== uploadId || !/^[\w-]{1,100}$/.test(uploadId)) throw uploadForged();
    const row = await uploadsStore.findUpload(db, uploadId);
    if (!row) throw uploadForged();
    const valid = keyring.ids().some((id) => {
      const master = keyring.get(id);
      return master !== undefined && safeEqual(sign(signingKey(master.key), row), signature);
    });
    if (!valid) throw uploadForged();
    if (row.received_at !== null) throw alreadyUsed();
    if (row.expires_at <= now()) throw expired();
    return row;
  }

  /** Streams `archive` to a new private file, counting bytes as they come. */
  async function stage(uploadId: string, archive: Readable, maxBytes: number): Promise<{ file: string; size: number }> {
    const file = path.join(await incomingDir(), `${uploadId}-${crypto.randomBytes(6).toString("hex")}.tar.gz`);
    const handle = await fs.promises.open(file, "wx", 0o600);
    let size = 0;
    let complete = false;
    try {
      const chunks = archive[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
      for (;;) {
        let next: IteratorResult<Buffer>;
        try {
          next = await chunks.next();
        } catch (error) {
          throw new AppError("validation_error", "The upload broke off before the whole archive arrived.", { cause: error });
        }
        if (next.done) break;
        size += next.value.length;
        if (size > maxBytes) {
          // Stops reading: the answer goes out now, not after the rest of the body.
          await chunks.return?.();
          throw new AppError("archive_too_large", `The source archive is larger than the server's upload limit (${formatBytes(maxBytes)}).`, {
            hint: "Leave build output and large data out of the project folder.",
          });
        }
        await handle.write(next.value);
      }
      complete = true;
      return { file, size };
    } finally {
      await handle.close();
      if (!complete) await fs.promises.rm(file, { force: true });
    }
  }

  return {
    async issue(workspaceId, workerId, publicUrl) {
      const created = now();
      const row = {
        id: newId(),
        workspace_id: workspaceId,
        worker_id: workerId,
        created_at: created,
        expires_at: created + UPLOAD_TTL_MS,
        received_at: null,
        archive: null,
        archive_key_id: null,
        archive_size: null,
        built_at: null,
      };
      await uploadsStore.insertUpload(db, row);
      const signature = sign(signingKey(keyring.current().key), row);
      return { url: `${publicUrl}/api/v3/uploads/${row.id}`, fields: { uploadId: row.id, signature } };
    },

    async accept(uploadId, fields, archive, limits) {
      const row = await authorize(uploadId, fields);
      const { file, size } = await stage(row.id, archive, limits.maxBytes);
      const discard = () => fs.promises.rm(file, { force: true });
      return {
        size,
        discard,
        async store() {
          try {
            await inspectArchiveFile(file);
            const bytes = await fs.promises.readFile(file);
            const sealed = seal(keyring, bytes, aad.archive(row.workspace_id, row.worker_id, row.id));
            if (await uploadsStore.receiveUpload(db, row.id, { keyId: sealed.keyId, sealed: sealed.sealed, size }, now())) return;
            // Another request with these fields won the race, or they expired while the archive arrived.
            const current = await uploadsStore.findUpload(db, row.id);
            throw current && current.received_at === null ? expired() : alreadyUsed();
          } finally {
            await discard();
          }
        },
      };
    },
  };
}

function formatBytes(bytes: number): string {
  return bytes >= 1048576 ? `${Math.round((bytes / 1048576) * 10) / 10} MiB` : `${Math.ceil(bytes / 1024)} KiB`;
}
