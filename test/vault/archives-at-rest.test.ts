import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { PassThrough } from "node:stream";
import zlib from "node:zlib";
import SQLite from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { rotateMasterKey, startServer, type RunningServer } from "../../packages/server/src/main.js";
import { Keyring, keyId } from "../../packages/server/src/vault/keyring.js";
import { readUploadArchive } from "../../packages/server/src/workers/uploads.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Source archives at rest on SQLite: the archive a deploy uploads is sealed like a secret (the
 * database holds neither its gzip stream nor the text of its files), builds read it opened, rows
 * stored in clear before archives were sealed stay readable, and key rotation re-seals them all.
 */

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function dataDir(): string {
  const tmp = tempDir("wy-archives-at-rest-");
  cleanups.push(tmp.cleanup);
  return tmp.dir;
}

async function startOn(dir: string): Promise<{ server: RunningServer; call(action: string, body?: unknown): Promise<{ status: number; body: any }>; stop(): Promise<void> }> {
  const server = await startServer({ host: "127.0.0.1", port: 0, dataDir: dir, logStream: new PassThrough().resume(), logLevel: "info" });
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await server.stop();
  };
  cleanups.push(stop);
  const token = fs.readFileSync(path.join(dir, "admin-token"), "utf8").trim();
  return {
    server,
    async call(action, body = {}) {
      const response = await fetch(`${server.url}/api/v3/workers${action}`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: JSON.stringify(body),
      });
      return { status: response.status, body: await response.json() };
    },
    stop,
  };
}

/** One ustar entry: header, then the body padded to 512 bytes. */
function tarEntry(name: string, body: Buffer): Buffer {
  const header = Buffer.alloc(512);
  const octal = (n: number, length: number) => `${n.toString(8).padStart(length - 1, "0")}\0`;
  header.write(name, 0, 100, "utf8");
  header.write(octal(0o644, 8), 100);
  header.write(octal(0, 8), 108);
  header.write(octal(0, 8), 116);
  header.write(octal(body.length, 12), 124);
  header.write(octal(0, 12), 136);
  header.write(" ".repeat(8), 148);
  header.write("0", 156);
  header.write("ustar\u000000", 257);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
  return Buffer.concat([header, body, Buffer.alloc((512 - (body.length % 512)) % 512)]);
}

/**
 * A project archive whose files hold `canary` verbatim even gzipped (level 0 stores instead of
 * deflating), so finding it in the database would mean the archive is stored as sent.
 */
function projectArchive(canary: string): Buffer {
  const tar = Buffer.concat([
    tarEntry("package.json", Buffer.from('{ "name": "at-rest", "type": "module" }\n')),
    tarEntry("src/index.ts", Buffer.from(`export const marker = "${canary}";\nexport default {};\n`)),
    tarEntry("notes.txt", Buffer.from(`${canary}\n`.repeat(400))),
    Buffer.alloc(1024),
  ]);
  const archive = zlib.gzipSync(tar, { level: 0 });
  expect(archive.includes(Buffer.from(canary))).toBe(true);
  return archive;
}

async function upload(url: string, fields: Record<string, string>, archive: Buffer): Promise<number> {
  const form = new FormData();
  for (const [key, value] of Object.entries(fields)) form.append(key, value);
  form.append("file", new Blob([archive], { type: "application/gzip" }), "archive.tar.gz");
  const response = await fetch(url, { method: "POST", body: form });
  await response.text();
  return response.status;
}

function storeBytes(dir: string): Buffer {
  return Buffer.concat(["workyard.db", "workyard.db-wal"].map((f) => path.join(dir, f)).filter((f) => fs.existsSync(f)).map((f) => fs.readFileSync(f)));
}

interface ArchiveRow {
  id: string;
  archive_key_id: string | null;
  archive: Buffer | null;
  archive_size: number | null;
}

function archiveRows(dir: string): ArchiveRow[] {
  const db = new SQLite(path.join(dir, "workyard.db"), { readonly: true, fileMustExist: true });
  try {
    return db.prepare("select id, archive_key_id, archive, archive_size from uploads where archive is not null order by id").all() as ArchiveRow[];
  } finally {
    db.close();
  }
}

function keyFileIds(dir: string): string[] {
  return fs
    .readFileSync(path.join(dir, "master.key"), "utf8")
    .split(/\s+/)
    .filter(Boolean)
    .map((k) => keyId(Buffer.from(k, "base64")));
}

describe("source archives at rest on SQLite", () => {
  it("stores an uploaded archive sealed, opens it for builds, and rotate-key re-seals it with the rows kept in clear", async () => {
    const dir = dataDir();
    const canary = `wy-canary-archive-${crypto.randomBytes(6).toString("hex")}`;
    const archive = projectArchive(canary);

    const first = await startOn(dir);
    const created = await first.call("CreateWorker", { name: "archive-at-rest", uploadType: "source" });
    expect(created.status).toBe(200);
    const { url, fields } = created.body as { url: string; fields: { uploadId: string; signature: string } };
    expect(await upload(url, fields, archive)).toBe(200);

    // A row written before archives were sealed: the archive in clear, no key id.
    const legacyCanary = `wy-canary-legacy-${crypto.randomBytes(6).toString("hex")}`;
    const legacyArchive = projectArchive(legacyCanary);
    const legacyId = `legacy-${crypto.randomBytes(4).toString("hex")}`;
    const now = Date.now();
    await first.server.store.db
      .insertInto("uploads")
      .values({
        id: legacyId,
        workspace_id: first.server.bootstrap.workspace.id,
        worker_id: created.body.worker.workerId,
        created_at: now,
        expires_at: now + 60_000,
        received_at: now,
        archive: legacyArchive,
        archive_key_id: null,
        archive_size: legacyArchive.length,
        built_at: now,
      })
      .execute();

    // What builds read: the archive as sent, sealed or not.
    const keyring = Keyring.fromFile(path.join(dir, "master.key"));
    expect((await readUploadArchive(first.server.store.db, keyring, fields.uploadId))!.equals(archive)).toBe(true);
    expect((await readUploadArchive(first.server.store.db, keyring, legacyId))!.equals(legacyArchive)).toBe(true);

    // In the database file (and its WAL): neither the gzip stream nor the files' text.
    const [oldKeyId] = keyFileIds(dir);
    const sealedRow = archiveRows(dir).find((row) => row.id === fields.uploadId)!;
    expect(sealedRow.archive_key_id).toBe(oldKeyId);
    expect(sealedRow.archive_size).toBe(archive.length);
    expect(() => zlib.gunzipSync(sealedRow.archive!)).toThrow();
    expect(sealedRow.archive!.subarray(0, 64).equals(archive.subarray(0, 64))).toBe(false);
    expect(sealedRow.archive!.includes(Buffer.from(canary))).toBe(false);
    const stored = storeBytes(dir);
    expect(stored.includes(Buffer.from(`${canary}\n`))).toBe(false);
    expect(stored.includes(archive.subarray(0, 64))).toBe(false);
    // The legacy row is the one place the clear bytes are, until rotation.
    expect(stored.includes(Buffer.from(legacyCanary))).toBe(true);
    await first.stop();

    const report = await rotateMasterKey({ dataDir: dir, env: {} });
    expect(report.resealed["source archives"]).toBe(2);
    expect(report.removedKeyIds).toEqual([oldKeyId]);
    const rows = archiveRows(dir);
    expect(rows.map((row) => row.archive_key_id)).toEqual([report.keyId, report.keyId]);
    for (const row of rows) {
      for (const text of [canary, legacyCanary]) expect(row.archive!.includes(Buffer.from(text))).toBe(false);
      expect(row.archive!.subarray(0, 64).equals(archive.subarray(0, 64))).toBe(false);
      expect(row.archive!.subarray(0, 64).equals(legacyArchive.subarray(0, 64))).toBe(false);
    }
    expect(rows.find((row) => row.id === fields.uploadId)!.archive!.equals(sealedRow.archive!)).toBe(false);
    expect(storeBytes(dir).includes(Buffer.from(canary))).toBe(false);
    // SQLite keeps freed pages as they were (no secure_delete): the legacy row's clear bytes may
    // linger there until the pages are reused or the file vacuumed. Reported, not asserted.
    console.log(`legacy clear bytes still in free pages after rotation: ${storeBytes(dir).includes(Buffer.from(legacyCanary))}`);

    // A server on the rotated key opens both.
    const second = await startOn(dir);
    const rotated = Keyring.fromFile(path.join(dir, "master.key"));
    expect(rotated.ids()).toEqual([report.keyId]);
    expect((await readUploadArchive(second.server.store.db, rotated, fields.uploadId))!.equals(archive)).toBe(true);
    expect((await readUploadArchive(second.server.store.db, rotated, legacyId))!.equals(legacyArchive)).toBe(true);
    await second.stop();
  });
});
