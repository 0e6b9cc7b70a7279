import crypto from "node:crypto";
import type { Kysely } from "kysely";
import { inspectArchive } from "../builder/archive.js";
import { AppError } from "../errors.js";
import { newId, safeEqual } from "../ids.js";
import type { Database } from "../store/schema.js";
import * as uploadsStore from "../store/uploads.js";
import type { Keyring } from "../vault/keyring.js";

/** How long the fields of CreateWorker / UpdateWorker stay valid. */
export const UPLOAD_TTL_MS = 15 * 60 * 1000;

/** What CreateWorker and UpdateWorker answer: where to POST the archive, and the fields to send. */
export interface UploadTicket {
  url: string;
  fields: { uploadId: string; signature: string };
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

export interface UploadService {
  issue(workspaceId: string, workerId: string, publicUrl: string): Promise<UploadTicket>;
  /** Accepts the archive for an issued upload; the fields work once. */
  receive(fields: { uploadId?: string | undefined; signature?: string | undefined }, archive: Buffer): Promise<void>;
}

export function createUploadService(db: Kysely<Database>, keyring: Keyring, now: () => number = Date.now): UploadService {
  const forged = () =>
    new AppError("upload_signature_invalid", "This upload was not issued by this server, or its fields were changed.", {
      hint: "Run `ntn workers deploy` again to get a fresh upload.",
    });

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

    async receive(fields, archive) {
      const { uploadId, signature } = fields;
      if (!uploadId || !signature) throw forged();
      const row = await uploadsStore.findUpload(db, uploadId);
      if (!row) throw forged();
      // Any key of the keyring may have signed it: uploads survive a key rotation.
      const ids = keyring.ids();
      const valid = ids.some((id) => {
        const master = keyring.get(id);
        return master !== undefined && safeEqual(sign(signingKey(master.key), row), signature);
      });
      if (!valid) throw forged();
      if (row.received_at !== null) {
        throw new AppError("upload_already_used", "These upload fields were already used.", {
          hint: "Run `ntn workers deploy` again to get a fresh upload.",
        });
      }
      if (row.expires_at <= now()) {
        throw new AppError("upload_expired", "These upload fields have expired (they last 15 minutes).", {
          hint: "Run `ntn workers deploy` again to get a fresh upload.",
        });
      }
      await inspectArchive(archive);
      if (!(await uploadsStore.receiveUpload(db, uploadId, archive, now()))) {
        throw new AppError("upload_already_used", "These upload fields were already used.", {
          hint: "Run `ntn workers deploy` again to get a fresh upload.",
        });
      }
    },
  };
}
