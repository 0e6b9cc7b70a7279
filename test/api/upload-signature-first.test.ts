import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { packSource } from "../../packages/cli/src/archive.js";
import { Keyring } from "../../packages/server/src/vault/keyring.js";
import { createUploadService, incomingUploadsDir, readUploadArchive } from "../../packages/server/src/workers/uploads.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Security finding M1: the upload endpoint read whole 45 MB bodies before it looked at their
 * signature. The fields are now checked when the file part begins; a forged upload is answered at
 * once and its connection closed, and a genuine one streams to a private file, refused as soon as
 * it passes the limit.
 */

const MiB = 1024 * 1024;

interface SlowAnswer {
  status: number;
  body: any;
  /** Bytes of the body handed to the socket when the answer arrived. */
  writtenAtAnswer: number;
  /** Bytes handed to the socket before it failed (the server closed it) or the body was all sent. */
  writtenTotal: number;
  /** The server ended the connection before the whole body was sent. */
  cutOff: boolean;
}

/**
 * A raw multipart POST that sends the fields, then the file part's header, then `fileBytes` of
 * file data in 64 KiB writes, pausing between them, and keeps writing after an answer until the
 * server closes the connection (or the body is all sent).
 */
function slowUpload(url: string, fields: Record<string, string>, fileBytes: number, pauseMs = 4): Promise<SlowAnswer> {
  const boundary = `----wy${crypto.randomBytes(8).toString("hex")}`;
  const head = Buffer.from(
    Object.entries(fields)
      .map(([name, value]) => `--${boundary}\r\ncontent-disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`)
      .join("") +
      `--${boundary}\r\ncontent-disposition: form-data; name="file"; filename="archive.tar.gz"\r\ncontent-type: application/gzip\r\n\r\n`,
  );
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  const target = new URL(url);
  return new Promise((resolve, reject) => {
    let written = 0;
    let writtenAtAnswer: number | undefined;
    let failed = false;
    let answer: { status: number; text: string } | undefined;
    const req = http.request({
      host: target.hostname,
      port: target.port,
      path: target.pathname,
      method: "POST",
      headers: { "content-type": `multipart/form-data; boundary=${boundary}`, "content-length": String(head.length + fileBytes + tail.length) },
    });
    const finish = () => {
      if (!answer || writtenAtAnswer === undefined || sending !== false) return;
      let body: unknown = answer.text;
      try {
        body = JSON.parse(answer.text);
      } catch {
        // keep the text
      }
      resolve({ status: answer.status, body, writtenAtAnswer, writtenTotal: written, cutOff: failed });
    };
    let sending: boolean | undefined;
    req.on("response", (res) => {
      writtenAtAnswer = written;
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (text += chunk));
      res.on("end", () => {
        answer = { status: res.statusCode ?? 0, text };
        finish();
      });
      res.on("error", reject);
    });
    // The server closing the connection under our writes ends them; it is what the test expects.
    req.on("error", (error) => {
      failed = true;
      if (writtenAtAnswer === undefined) reject(error);
    });
    void (async () => {
      req.write(head);
      const chunk = crypto.randomBytes(64 * 1024);
      while (written < fileBytes && !failed) {
        const piece = chunk.subarray(0, Math.min(chunk.length, fileBytes - written));
        written += piece.length;
        if (!req.write(piece)) {
          await new Promise<void>((next) => {
            const go = () => {
              for (const event of ["drain", "error", "close"]) req.off(event, go);
              next();
            };
            for (const event of ["drain", "error", "close"]) req.on(event, go);
          });
        }
        if (pauseMs > 0) await new Promise((next) => setTimeout(next, pauseMs));
        if (req.destroyed) failed = true;
      }
      if (!failed) req.end(tail);
      sending = false;
      finish();
    })();
  });
}

async function goodArchive(): Promise<Buffer> {
  const project = tempDir("wy-upload-first-project-");
  try {
    fs.mkdirSync(path.join(project.dir, "src"));
    fs.writeFileSync(path.join(project.dir, "src/index.ts"), "export default {};\n");
    fs.writeFileSync(path.join(project.dir, "package.json"), '{ "name": "upload-first", "type": "module" }\n');
    return (await packSource(project.dir)).archive;
  } finally {
    project.cleanup();
  }
}

async function upload(url: string, fields: Record<string, string>, archive: Buffer): Promise<{ status: number; body: any }> {
  const form = new FormData();
  for (const [key, value] of Object.entries(fields)) form.append(key, value);
  form.append("file", new Blob([archive], { type: "application/gzip" }), "archive.tar.gz");
  const response = await fetch(url, { method: "POST", body: form });
  return { status: response.status, body: await response.json() };
}

describe("the upload's fields are checked before its body is read", () => {
  let server: TestServer;
  let archive: Buffer;
  beforeAll(async () => {
    server = await startTestServer();
    archive = await goodArchive();
  });
  afterAll(async () => server?.stop());

  async function ticket(name: string): Promise<{ url: string; fields: Record<string, string> }> {
    const created = await server.call("CreateWorker", { name, uploadType: "source" });
    expect(created.status).toBe(200);
    return created.body;
  }

  async function uploadRow(id: string) {
    return server.server.store.db.selectFrom("uploads").select(["received_at", "archive_size"]).where("id", "=", id).executeTakeFirstOrThrow();
  }

  it("answers a forged 45 MB upload with 403 after a few MB, and closes the connection", async () => {
    const { url, fields } = await ticket("forged-slow");
    const forged = { ...fields, signature: crypto.randomBytes(32).toString("base64url") };
    const answer = await slowUpload(url, forged, 45 * 1000 * 1000);
    console.log(`forged upload: ${answer.status} after ${(answer.writtenAtAnswer / MiB).toFixed(2)} MiB written; ${(answer.writtenTotal / MiB).toFixed(2)} MiB before the connection closed`);
    expect(answer.status).toBe(403);
    expect(answer.body.code).toBe("upload_signature_invalid");
    expect(answer.writtenAtAnswer).toBeLessThan(4 * MiB);
    // The server did not drain the rest: the connection ended long before 45 MB.
    expect(answer.cutOff).toBe(true);
    expect(answer.writtenTotal).toBeLessThan(20 * MiB);
    expect(await uploadRow(fields.uploadId!)).toEqual({ received_at: null, archive_size: null });
    // The genuine fields still work.
    expect((await upload(url, fields, archive)).status).toBe(200);
  });

  it("answers fields already used with 409 before reading the archive", async () => {
    const { url, fields } = await ticket("used-slow");
    expect((await upload(url, fields, archive)).status).toBe(200);
    const answer = await slowUpload(url, fields, 45 * 1000 * 1000);
    expect(answer.status).toBe(409);
    expect(answer.body.code).toBe("upload_already_used");
    expect(answer.writtenAtAnswer).toBeLessThan(4 * MiB);
    expect(answer.cutOff).toBe(true);
  });

  it("answers a file part sent before the fields as forged", async () => {
    const { url, fields } = await ticket("file-first");
    const form = new FormData();
    form.append("file", new Blob([archive], { type: "application/gzip" }), "archive.tar.gz");
    for (const [key, value] of Object.entries(fields)) form.append(key, value);
    const response = await fetch(url, { method: "POST", body: form });
    expect(response.status).toBe(403);
    expect(((await response.json()) as { code: string }).code).toBe("upload_signature_invalid");
    expect((await upload(url, fields, archive)).status).toBe(200);
  });
});

describe("a genuine upload over the limit", () => {
  let server: TestServer;
  let archive: Buffer;
  beforeAll(async () => {
    server = await startTestServer({ uploadLimit: MiB });
    archive = await goodArchive();
  });
  afterAll(async () => server?.stop());

  it("answers 413 archive_too_large as the bytes pass the limit, not after the whole body", async () => {
    const created = await server.call("CreateWorker", { name: "too-big", uploadType: "source" });
    const { url, fields } = created.body as { url: string; fields: Record<string, string> };
    const answer = await slowUpload(url, fields, 20 * MiB);
    console.log(`oversized upload: ${answer.status} after ${(answer.writtenAtAnswer / MiB).toFixed(2)} MiB written (limit 1 MiB)`);
    expect(answer.status).toBe(413);
    expect(answer.body.code).toBe("archive_too_large");
    expect(answer.body.message).toContain("1 MiB");
    expect(answer.writtenAtAnswer).toBeLessThan(5 * MiB);
    expect(answer.cutOff).toBe(true);
    const row = await server.server.store.db.selectFrom("uploads").select(["received_at", "archive"]).where("id", "=", fields.uploadId!).executeTakeFirstOrThrow();
    expect(row).toEqual({ received_at: null, archive: null });
    expect((await upload(url, fields, archive)).status).toBe(200);
  });
});

describe("an arriving archive waits in a private file under <data dir>/uploads-incoming", () => {
  let server: TestServer;
  let archive: Buffer;
  beforeAll(async () => {
    server = await startTestServer();
    archive = await goodArchive();
  });
  afterAll(async () => server?.stop());

  it("is written with mode 0600 while it arrives and removed once stored or refused", async () => {
    const keyring = Keyring.fromFile(path.join(server.dataDir, "master.key"));
    const uploads = createUploadService(server.server.store.db, keyring, { dataDir: server.dataDir });
    const created = await server.call("CreateWorker", { name: "incoming", uploadType: "source" });
    const workerId = created.body.worker.workerId as string;
    const dir = incomingUploadsDir(server.dataDir);

    // While the archive arrives, its file is there, private.
    const issued = await uploads.issue(server.workspaceId, workerId, server.url);
    let seen: { mode: number; dirMode: number } | undefined;
    const arriving = Readable.from(
      (async function* () {
        yield archive.subarray(0, 10);
        const [name] = fs.readdirSync(dir);
        seen = { mode: fs.statSync(path.join(dir, name!)).mode & 0o777, dirMode: fs.statSync(dir).mode & 0o777 };
        yield archive.subarray(10);
      })(),
    );
    const staged = await uploads.accept(issued.fields.uploadId, issued.fields, arriving, { maxBytes: MiB });
    expect(seen).toEqual({ mode: 0o600, dirMode: 0o700 });
    expect(staged.size).toBe(archive.length);
    await staged.store();
    expect(fs.readdirSync(dir)).toEqual([]);
    expect((await readUploadArchive(server.server.store.db, keyring, issued.fields.uploadId))!.equals(archive)).toBe(true);

    // Over the limit: refused while arriving, nothing left behind.
    const big = await uploads.issue(server.workspaceId, workerId, server.url);
    await expect(uploads.accept(big.fields.uploadId, big.fields, Readable.from([crypto.randomBytes(600 * 1024), crypto.randomBytes(600 * 1024)]), { maxBytes: MiB })).rejects.toMatchObject({
      code: "archive_too_large",
    });
    expect(fs.readdirSync(dir)).toEqual([]);

    // Not an archive: refused by the inspection, nothing left behind.
    const bad = await uploads.issue(server.workspaceId, workerId, server.url);
    const refused = await uploads.accept(bad.fields.uploadId, bad.fields, Readable.from([Buffer.from("not an archive")]), { maxBytes: MiB });
    await expect(refused.store()).rejects.toMatchObject({ code: "archive_invalid" });
    expect(fs.readdirSync(dir)).toEqual([]);

    // Forged: refused before the stream is touched, so no file is even made.
    const forged = await uploads.issue(server.workspaceId, workerId, server.url);
    let read = false;
    const untouched = Readable.from(
      (async function* () {
        read = true;
        yield archive;
      })(),
    );
    await expect(uploads.accept(forged.fields.uploadId, { ...forged.fields, signature: "x" }, untouched, { maxBytes: MiB })).rejects.toMatchObject({
      code: "upload_signature_invalid",
    });
    expect(read).toBe(false);
    expect(fs.readdirSync(dir)).toEqual([]);
  });
});
