import crypto from "node:crypto";
import fs from "node:fs";
import type http from "node:http";
import path from "node:path";
import zlib from "node:zlib";
import { create as createTar } from "tar";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { packSource } from "../../packages/cli/src/archive.js";
import { createTokenService } from "../../packages/server/src/auth/tokens.js";
import { createWorkspace } from "../../packages/server/src/workspaces/service.js";
import { DIALECTS } from "../helpers/dialects.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { tempDir } from "../helpers/tmp.js";
import { rawRequest } from "../robustness/http.js";

/**
 * Bad input of every kind answers a 4xx in the Notion API's error shape, stores nothing half-way,
 * and leaves the server serving (SPEC section 5, "Bad input"; STYLE section 3).
 */

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  body: any;
}

/** rawRequest to a full URL, POST unless told; `body` is the parsed JSON, or the text. */
async function rawRequestTo(url: string, options: { method?: string; headers?: Record<string, string>; body?: Buffer | string | Buffer[] } = {}): Promise<Answer> {
  const target = new URL(url);
  const answer = await rawRequest(target.origin, { method: options.method ?? "POST", path: `${target.pathname}${target.search}`, headers: options.headers, body: options.body });
  return { ...answer, body: answer.json ?? answer.text };
}

/** The error body every non-2xx answer carries. */
function expectErrorShape(answer: { status: number; body: any }, status: number, code: string): void {
  expect(answer.status, JSON.stringify(answer.body)).toBe(status);
  expect(answer.body).toMatchObject({ object: "error", status, code, name: code });
  expect(typeof answer.body.message).toBe("string");
  expect(answer.body.message.length).toBeGreaterThan(0);
  // Short, readable, no stack or internals.
  expect(answer.body.message).not.toMatch(/\n\s+at /);
  expect(JSON.stringify(answer.body)).not.toMatch(/FST_|stack|node_modules/);
}

/** The parts of an error answer that must not tell another workspace's worker from an unknown one. */
function errorFingerprint(answer: { status: number; body: any }, id: string) {
  const { request_id: _ignored, ...rest } = answer.body as Record<string, unknown>;
  return { httpStatus: answer.status, ...JSON.parse(JSON.stringify(rest).replaceAll(id, "<ID>")) };
}

const DAY = 86_400_000;

/** POSTs the upload as the official CLI does: the fields as text parts, then `file`. */
async function upload(
  url: string,
  fields: Record<string, string>,
  file: Buffer | undefined,
  options: { fileField?: string } = {},
): Promise<{ status: number; body: any }> {
  const form = new FormData();
  for (const [key, value] of Object.entries(fields)) form.append(key, value);
  if (file) form.append(options.fileField ?? "file", new Blob([file], { type: "application/gzip" }), "archive.tar.gz");
  const response = await fetch(url, { method: "POST", body: form });
  const text = await response.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // keep the text
  }
  return { status: response.status, body };
}

/** A minimal worker project packed as `deploy` packs it. */
async function goodProjectArchive(): Promise<Buffer> {
  const project = tempDir("wy-bad-input-project-");
  try {
    fs.mkdirSync(path.join(project.dir, "src"));
    fs.writeFileSync(path.join(project.dir, "src/index.ts"), "export default {};\n");
    fs.writeFileSync(path.join(project.dir, "package.json"), '{ "name": "bad-input", "type": "module" }\n');
    return (await packSource(project.dir)).archive;
  } finally {
    project.cleanup();
  }
}

describe.each(DIALECTS)("bad input on %s", (dialect) => {
  let server: TestServer;
  let goodArchive: Buffer;

  beforeAll(async () => {
    server = await startTestServer({ dialect });
    goodArchive = await goodProjectArchive();
  });
  afterAll(async () => server?.stop());

  const actionUrl = (action: string) => `${server.url}/api/v3/workers${action}`;
  const auth = () => ({ authorization: `Bearer ${server.adminToken}` });

  /** The server keeps serving: a following ListWorkers succeeds. */
  async function expectServing(): Promise<void> {
    const listed = await server.call("ListWorkers", {});
    expect(listed.status).toBe(200);
    expect(Array.isArray(listed.body.workers)).toBe(true);
  }

  async function workerIds(): Promise<string[]> {
    return (await server.call("ListWorkers", {})).body.workers.map((w: { workerId: string }) => w.workerId).sort();
  }

  async function newWorker(name = "w"): Promise<{ workerId: string; url: string; fields: Record<string, string> }> {
    const created = await server.call("CreateWorker", { name, uploadType: "source" });
    expect(created.status).toBe(200);
    return { workerId: created.body.worker.workerId, url: created.body.url, fields: created.body.fields };
  }

  async function secretNames(workerId: string): Promise<string[]> {
    const listed = await server.call("ListSecrets", { workerId });
    expect(listed.status).toBe(200);
    return listed.body.secrets.map((s: { key: string }) => s.key);
  }

  describe("request bodies", () => {
    it.each([
      ["truncated JSON", '{"name": "x"'],
      ["not JSON at all", "name=x"],
      ["trailing garbage", '{"name":"x"} trailing'],
      ["empty body", ""],
      ["a forbidden __proto__ key", '{"name":"x","__proto__":{"polluted":true}}'],
    ])("malformed JSON (%s) answers 400 invalid_json and stores nothing", async (_label, text) => {
      const before = await workerIds();
      const answer = await rawRequestTo(actionUrl("CreateWorker"), {
        headers: { ...auth(), "content-type": "application/json" },
        body: text,
      });
      expectErrorShape(answer, 400, "invalid_json");
      expect(answer.headers["content-type"]).toMatch(/^application\/json/);
      expect(await workerIds()).toEqual(before);
      await expectServing();
    });

    it("a body over the 1 MiB limit answers 413 body_too_large and stores nothing", async () => {
      const before = await workerIds();
      const text = JSON.stringify({ name: "big", uploadType: "source", padding: "x".repeat(1024 * 1024 + 1024) });
      const answer = await rawRequestTo(actionUrl("CreateWorker"), {
        headers: { ...auth(), "content-type": "application/json", "content-length": String(Buffer.byteLength(text)) },
        body: text,
      });
      expectErrorShape(answer, 413, "body_too_large");
      expect(await workerIds()).toEqual(before);
      await expectServing();
    });

    it("a chunked body over the limit (no Content-Length) answers 413 body_too_large too", async () => {
      const before = await workerIds();
      const chunk = Buffer.alloc(64 * 1024, "x");
      const chunks = [Buffer.from('{"name":"big","padding":"'), ...Array.from({ length: 20 }, () => chunk), Buffer.from('"}')];
      const answer = await rawRequestTo(actionUrl("CreateWorker"), {
        headers: { ...auth(), "content-type": "application/json", "transfer-encoding": "chunked" },
        body: chunks,
      });
      expectErrorShape(answer, 413, "body_too_large");
      expect(await workerIds()).toEqual(before);
      await expectServing();
    });

    it("a body just under the limit is read (and then judged on its content)", async () => {
      // 1 MiB minus a little: parsed, then refused by the schema for its over-long name, not for its size.
      const text = JSON.stringify({ name: "n".repeat(1024 * 1024 - 100) });
      const answer = await rawRequestTo(actionUrl("CreateWorker"), { headers: { ...auth(), "content-type": "application/json" }, body: text });
      expectErrorShape(answer, 400, "validation_error");
      await expectServing();
    });

    it.each(["application/xml", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])(
      "a body of type %s answers 415 unsupported_media_type",
      async (type) => {
        const before = await workerIds();
        const answer = await rawRequestTo(actionUrl("CreateWorker"), {
          headers: { ...auth(), "content-type": type },
          body: type.startsWith("application/x-www") ? "name=form" : "<name>xml</name>",
        });
        expectErrorShape(answer, 415, "unsupported_media_type");
        expect(answer.body.message).toContain("application/json");
        expect(await workerIds()).toEqual(before);
        await expectServing();
      },
    );

    it("a text/plain body answers a 4xx error and stores nothing", async () => {
      // Fastify reads text/plain as a string, so the schema refuses it (400) before any media-type
      // check could (415); either is a clear refusal.
      const before = await workerIds();
      const answer = await rawRequestTo(actionUrl("CreateWorker"), {
        headers: { ...auth(), "content-type": "text/plain" },
        body: '{"name":"plain"}',
      });
      expect([400, 415]).toContain(answer.status);
      expectErrorShape(answer, answer.status, answer.status === 415 ? "unsupported_media_type" : "validation_error");
      expect(await workerIds()).toEqual(before);
      await expectServing();
    });

    it.each([
      ["workerId a number", "GetWorker", { workerId: 42 }],
      ["workerId null", "GetWorker", { workerId: null }],
      ["workerId missing", "GetWorker", {}],
      ["workerId empty", "ListSecrets", { workerId: "" }],
      ["secrets not an array", "UpsertSecrets", { workerId: "w", secrets: { A: "1" } }],
      ["a secret value a number", "UpsertSecrets", { workerId: "w", secrets: [{ key: "A", value: 1 }] }],
      ["a secret without a value", "UpsertSecrets", { workerId: "w", secrets: [{ key: "A" }] }],
      ["name an object", "CreateWorker", { name: { first: "x" } }],
      ["the body an array", "CreateWorker", [{ name: "x" }]],
      ["the body a string", "CreateWorker", "x"],
      ["the body null", "CreateWorker", null],
      ["expiresIn a number", "CreateToken", { name: "t", expiresIn: 30 }],
    ])("wrong JSON types (%s) answer 400 validation_error", async (_label, action, body) => {
      const workersBefore = await workerIds();
      const tokensBefore = (await server.call("ListTokens", {})).body.tokens.length;
      const answer = await server.call(action, body);
      expectErrorShape(answer, 400, "validation_error");
      expect(answer.body.message).toMatch(/^Invalid request body: /);
      expect(await workerIds()).toEqual(workersBefore);
      expect((await server.call("ListTokens", {})).body.tokens.length).toBe(tokensBefore);
      await expectServing();
    });

    it("validation messages read cleanly when the problem is the whole body or a missing field", async () => {
      // Ajv reports these at the body's root (`body must be object`, `body must have required
      // property 'workerId'`): the message must not come out as "Invalid request body:  must ...".
      for (const [action, body] of [
        ["GetWorker", {}],
        ["CreateWorker", [{ name: "x" }]],
        ["CreateWorker", null],
      ] as const) {
        const answer = await server.call(action, body);
        expectErrorShape(answer, 400, "validation_error");
        expect(answer.body.message).toMatch(/^Invalid request body: \S/);
        expect(answer.body.message).not.toMatch(/ {2}/);
      }
      const missing = await server.call("GetWorker", {});
      expect(missing.body.message).toContain("workerId");
    });

    it("a worker name that is blank or too long is refused and not stored", async () => {
      const before = await workerIds();
      for (const name of ["", "   ", "n".repeat(101), "n".repeat(501)]) {
        const answer = await server.call("CreateWorker", { name, uploadType: "source" });
        expectErrorShape(answer, 400, "validation_error");
      }
      expect(await workerIds()).toEqual(before);
      await expectServing();
    });

    it("an unreadable token lifetime is refused and no token is stored", async () => {
      const before = (await server.call("ListTokens", {})).body.tokens;
      const answer = await server.call("CreateToken", { name: "bad-lifetime", expiresIn: "soonish" });
      expectErrorShape(answer, 400, "validation_error");
      expect(answer.body.message).toContain("soonish");
      expect((await server.call("ListTokens", {})).body.tokens).toEqual(before);
      await expectServing();
    });
  });

  describe("routes", () => {
    it("an unknown action answers 404 unknown_action", async () => {
      const answer = await server.call("FrobnicateEverything", {});
      expectErrorShape(answer, 404, "unknown_action");
      expect(answer.body.message).toContain("FrobnicateEverything");
      await expectServing();
    });

    it("an unknown action answers the same without a token (no auth oracle)", async () => {
      const answer = await server.call("FrobnicateEverything", {}, null);
      expectErrorShape(answer, 404, "unknown_action");
    });

    it("a GET on an action path answers a 4xx error that says actions are POSTed", async () => {
      const answer = await rawRequestTo(actionUrl("ListWorkers"), { method: "GET", headers: auth() });
      expect([404, 405]).toContain(answer.status);
      expectErrorShape(answer, answer.status, answer.body.code);
      expect(`${answer.body.message} ${answer.body.hint ?? ""}`).toContain("POST");
      await expectServing();
    });

    it("a path outside the API answers 404 not_found in the same shape", async () => {
      const answer = await rawRequestTo(`${server.url}/no/such/page`, { method: "GET" });
      expectErrorShape(answer, 404, "not_found");
    });
  });

  describe("unknown workers", () => {
    const madeUp = crypto.randomUUID();
    it.each([
      ["GetWorker", { workerId: madeUp }],
      ["UpdateWorker", { workerId: madeUp, uploadType: "source" }],
      ["DeleteWorker", { workerId: madeUp }],
      ["UpsertSecrets", { workerId: madeUp, secrets: [{ key: "A", value: "1" }] }],
      ["ListSecrets", { workerId: madeUp }],
      ["DeleteSecret", { workerId: madeUp, key: "A" }],
      ["PullEnv", { workerId: madeUp }],
    ])("%s on an unknown worker answers 404 worker_not_found", async (action, body) => {
      const answer = await server.call(action, body);
      expectErrorShape(answer, 404, "worker_not_found");
      expect(answer.body.message).toContain(madeUp);
      expect(await workerIds()).not.toContain(madeUp);
      await expectServing();
    });
  });

  describe("environment variable names", () => {
    it.each(["1A", "A-B", "A B", "", "ÄB", "A=B", "A.B", " A", "A\nB"])(
      "UpsertSecrets with %j answers 400 env_name_invalid and stores nothing of the request",
      async (bad) => {
        const { workerId } = await newWorker("names");
        await server.call("UpsertSecrets", { workerId, secrets: [{ key: "KEPT", value: "before" }] });
        const answer = await server.call("UpsertSecrets", {
          workerId,
          secrets: [
            { key: "GOOD_FIRST", value: "1" },
            { key: bad, value: "2" },
            { key: "KEPT", value: "after" },
          ],
        });
        expectErrorShape(answer, 400, "env_name_invalid");
        expect(answer.body.message).toContain(JSON.stringify(bad));
        expect(await secretNames(workerId)).toEqual(["KEPT"]);
        const pulled = await server.call("PullEnv", { workerId });
        expect(pulled.body.env).toEqual([{ key: "KEPT", value: "before" }]);
        await expectServing();
      },
    );

    it("valid names of every allowed form are stored", async () => {
      const { workerId } = await newWorker("good-names");
      const keys = ["A", "_", "_A1", "a_b_C", "Z9"];
      const answer = await server.call("UpsertSecrets", { workerId, secrets: keys.map((key) => ({ key, value: "v" })) });
      expect(answer.status).toBe(200);
      expect((await secretNames(workerId)).sort()).toEqual([...keys].sort());
    });
  });

  describe("authentication", () => {
    async function expectUnauthorized(headers: Record<string, string>): Promise<string> {
      const before = await workerIds();
      const answer = await rawRequestTo(actionUrl("CreateWorker"), {
        headers: { "content-type": "application/json", ...headers },
        body: JSON.stringify({ name: "intruder", uploadType: "source" }),
      });
      expectErrorShape(answer, 401, "unauthorized");
      expect(answer.headers["www-authenticate"]).toMatch(/^Bearer/);
      expect(await workerIds()).toEqual(before);
      await expectServing();
      return answer.body.message as string;
    }

    it("missing, wrong, expired and revoked tokens answer 401 unauthorized, each with its own message", async () => {
      const missing = await expectUnauthorized({});
      const notBearer = await expectUnauthorized({ authorization: `Basic ${Buffer.from("a:b").toString("base64")}` });
      const wrong = await expectUnauthorized({ authorization: "Bearer wy_not-a-real-token" });

      // A token that expired an hour ago: minted by the store's own token service with a clock in the past.
      const past = () => Date.now() - 2 * 3_600_000;
      const expired = await createTokenService(server.server.store.db, server.server.store.changes, past).createFor(server.workspaceId, "expired", "member", 3_600_000);
      const expiredMessage = await expectUnauthorized({ authorization: `Bearer ${expired.token}` });

      const created = await server.call("CreateToken", { name: "to-revoke" });
      expect(created.status).toBe(200);
      expect((await server.call("ListWorkers", {}, created.body.token)).status).toBe(200);
      expect((await server.call("RevokeToken", { tokenId: created.body.id })).status).toBe(200);
      const revoked = await expectUnauthorized({ authorization: `Bearer ${created.body.token}` });

      expect(missing).toMatch(/missing/i);
      expect(notBearer).toBe(missing);
      expect(wrong).toMatch(/invalid/i);
      expect(expiredMessage).toMatch(/expired/i);
      expect(revoked).toMatch(/revoked/i);
      expect(new Set([missing, wrong, expiredMessage, revoked]).size).toBe(4);
      // No message echoes the token it was given.
      for (const message of [wrong, expiredMessage, revoked]) {
        expect(message).not.toContain("wy_");
      }
    });

    it("a token that expires later still works, and ListTokens shows when", async () => {
      const created = await server.call("CreateToken", { name: "month", expiresIn: "30 days" });
      expect(created.status).toBe(200);
      expect((await server.call("ListWorkers", {}, created.body.token)).status).toBe(200);
      const listed = (await server.call("ListTokens", {})).body.tokens.find((t: { id: string }) => t.id === created.body.id);
      const issued = Date.parse(listed.issuedAt);
      expect(Date.parse(listed.expiresAt) - issued).toBe(30 * DAY);
    });
  });

  describe("ListTokens shape", () => {
    it("expiresAt is always a string ('never' without expiry); revokedAt is a string or absent", async () => {
      const never = await server.call("CreateToken", { name: "forever" });
      const month = await server.call("CreateToken", { name: "monthly", expiresIn: "30 days" });
      const gone = await server.call("CreateToken", { name: "gone" });
      await server.call("RevokeToken", { tokenId: gone.body.id });
      const { status, body } = await server.call("ListTokens", {});
      expect(status).toBe(200);
      const iso = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
      for (const token of body.tokens) {
        expect(Object.keys(token).sort()).toEqual(
          token.revokedAt === undefined ? ["expiresAt", "id", "issuedAt", "name"] : ["expiresAt", "id", "issuedAt", "name", "revokedAt"],
        );
        expect(typeof token.id).toBe("string");
        expect(typeof token.name).toBe("string");
        expect(token.issuedAt).toMatch(iso);
        expect(typeof token.expiresAt).toBe("string");
        expect(token.expiresAt === "never" || iso.test(token.expiresAt)).toBe(true);
        if (token.revokedAt !== undefined) expect(token.revokedAt).toMatch(iso);
        // Never the secret or its hash.
        expect(JSON.stringify(token)).not.toMatch(/wy_|token_hash|[0-9a-f]{64}/);
      }
      const byId = (id: string) => body.tokens.find((t: { id: string }) => t.id === id);
      expect(byId(never.body.id).expiresAt).toBe("never");
      expect(byId(month.body.id).expiresAt).toMatch(iso);
      expect(byId(gone.body.id).revokedAt).toMatch(iso);
      expect(byId(never.body.id).revokedAt).toBeUndefined();
      // CreateToken's own answer follows the same rule.
      expect(never.body.expiresAt).toBe("never");
      expect(month.body.expiresAt).toMatch(iso);
    });

    it("RevokeToken on an unknown token answers 404 token_not_found", async () => {
      const answer = await server.call("RevokeToken", { tokenId: crypto.randomUUID() });
      expectErrorShape(answer, 404, "token_not_found");
      await expectServing();
    });
  });

  describe("another workspace", () => {
    let otherToken: string;
    let ours: { workerId: string };

    beforeAll(async () => {
      const db = server.server.store.db;
      otherToken = (await createWorkspace(db, createTokenService(db, server.server.store.changes), "Other team")).token;
      ours = await newWorker("ours");
      await server.call("UpsertSecrets", { workerId: ours.workerId, secrets: [{ key: "OURS", value: "canary-ours-1" }] });
    });

    it("sees none of this workspace's workers", async () => {
      const listed = await server.call("ListWorkers", {}, otherToken);
      expect(listed.status).toBe(200);
      expect(listed.body.workers.map((w: { workerId: string }) => w.workerId)).not.toContain(ours.workerId);
    });

    it.each([
      ["GetWorker", (workerId: string) => ({ workerId })],
      ["UpdateWorker", (workerId: string) => ({ workerId, uploadType: "source" })],
      ["UpsertSecrets", (workerId: string) => ({ workerId, secrets: [{ key: "OURS", value: "overwritten" }] })],
      ["ListSecrets", (workerId: string) => ({ workerId })],
      ["DeleteSecret", (workerId: string) => ({ workerId, key: "OURS" })],
      ["PullEnv", (workerId: string) => ({ workerId })],
      ["DeleteWorker", (workerId: string) => ({ workerId })],
    ] as const)("%s on this workspace's worker answers exactly like an unknown worker", async (action, bodyFor) => {
      const madeUp = crypto.randomUUID();
      const foreign = await server.call(action, bodyFor(ours.workerId), otherToken);
      const unknown = await server.call(action, bodyFor(madeUp), otherToken);
      expectErrorShape(foreign, 404, "worker_not_found");
      expect(errorFingerprint(foreign, ours.workerId)).toEqual(errorFingerprint(unknown, madeUp));
      expect(JSON.stringify(foreign.body)).not.toContain("canary-ours-1");
      // Nothing changed on our side.
      const get = await server.call("GetWorker", { workerId: ours.workerId });
      expect(get.status).toBe(200);
      expect((await server.call("PullEnv", { workerId: ours.workerId })).body.env).toEqual([{ key: "OURS", value: "canary-ours-1" }]);
    });

    it("cannot revoke this workspace's tokens (answers like an unknown token)", async () => {
      const mine = await server.call("CreateToken", { name: "mine" });
      const foreign = await server.call("RevokeToken", { tokenId: mine.body.id }, otherToken);
      const unknownId = crypto.randomUUID();
      const unknown = await server.call("RevokeToken", { tokenId: unknownId }, otherToken);
      expectErrorShape(foreign, 404, "token_not_found");
      expect(errorFingerprint(foreign, mine.body.id)).toEqual(errorFingerprint(unknown, unknownId));
      expect((await server.call("ListWorkers", {}, mine.body.token)).status).toBe(200);
      expect((await server.call("ListTokens", {}, otherToken)).body.tokens.map((t: { id: string }) => t.id)).not.toContain(mine.body.id);
    });

    it("is not an admin: CreateWorkspace answers 403 forbidden", async () => {
      const answer = await server.call("CreateWorkspace", { name: "sneaky" }, otherToken);
      expectErrorShape(answer, 403, "forbidden");
    });
  });

  describe("source upload", () => {
    async function uploadRow(uploadId: string) {
      return server.server.store.db
        .selectFrom("uploads")
        .select(["received_at", "archive_size"])
        .where("id", "=", uploadId)
        .executeTakeFirstOrThrow();
    }

    /** Nothing was kept of a refused upload, and its fields still work once. */
    async function expectStillUsable(ticket: { url: string; fields: Record<string, string> }): Promise<void> {
      expect(await uploadRow(ticket.fields.uploadId!)).toEqual({ received_at: null, archive_size: null });
      const ok = await upload(ticket.url, ticket.fields, goodArchive);
      expect(ok.status, JSON.stringify(ok.body)).toBe(200);
      expect((await uploadRow(ticket.fields.uploadId!)).archive_size).toBe(goodArchive.length);
    }

    it("accepts the issued fields in any order, once", async () => {
      const ticket = await newWorker("upload-ok");
      const reversed = Object.fromEntries(Object.entries(ticket.fields).reverse());
      const first = await upload(ticket.url, reversed, goodArchive);
      expect(first.status).toBe(200);
      const again = await upload(ticket.url, ticket.fields, goodArchive);
      expectErrorShape(again, 409, "upload_already_used");
      await expectServing();
    });

    it("needs no Authorization header, and the url is absolute", async () => {
      const ticket = await newWorker("upload-url");
      expect(ticket.url).toBe(`${server.url}/api/v3/uploads/${ticket.fields.uploadId}`);
    });

    it("a forged signature answers 403 upload_signature_invalid and the upload stays usable", async () => {
      const ticket = await newWorker("forged");
      const signature = ticket.fields.signature!;
      const flipped = (signature[0] === "A" ? "B" : "A") + signature.slice(1);
      for (const forged of [flipped, "", "not-a-signature", `${signature}x`]) {
        const answer = await upload(ticket.url, { ...ticket.fields, signature: forged }, goodArchive);
        expectErrorShape(answer, 403, "upload_signature_invalid");
      }
      const withoutSignature = await upload(ticket.url, { uploadId: ticket.fields.uploadId! }, goodArchive);
      expectErrorShape(withoutSignature, 403, "upload_signature_invalid");
      await expectServing();
      await expectStillUsable(ticket);
    });

    it("the fields of another upload answer 403 upload_signature_invalid and neither upload is used up", async () => {
      const a = await newWorker("upload-a");
      const b = await newWorker("upload-b");
      const answer = await upload(a.url, b.fields, goodArchive);
      expectErrorShape(answer, 403, "upload_signature_invalid");
      // A's id with B's signature: forged too.
      const mixed = await upload(a.url, { uploadId: a.fields.uploadId!, signature: b.fields.signature! }, goodArchive);
      expectErrorShape(mixed, 403, "upload_signature_invalid");
      await expectServing();
      await expectStillUsable(a);
      await expectStillUsable(b);
    });

    it("an upload id the server never issued answers like a forged one", async () => {
      const ticket = await newWorker("upload-unknown");
      const id = crypto.randomUUID();
      const answer = await upload(`${server.url}/api/v3/uploads/${id}`, { uploadId: id, signature: ticket.fields.signature! }, goodArchive);
      expectErrorShape(answer, 403, "upload_signature_invalid");
    });

    it("reused fields answer 409 upload_already_used the second time and keep the first archive", async () => {
      const ticket = await newWorker("reuse");
      expect((await upload(ticket.url, ticket.fields, goodArchive)).status).toBe(200);
      const other = zlib.gzipSync(Buffer.alloc(0));
      const second = await upload(ticket.url, ticket.fields, other);
      expectErrorShape(second, 409, "upload_already_used");
      const third = await upload(ticket.url, ticket.fields, goodArchive);
      expectErrorShape(third, 409, "upload_already_used");
      expect((await uploadRow(ticket.fields.uploadId!)).archive_size).toBe(goodArchive.length);
      await expectServing();
    });

    it("a missing file part answers 400 and the upload stays usable", async () => {
      const ticket = await newWorker("no-file");
      const answer = await upload(ticket.url, ticket.fields, undefined);
      expectErrorShape(answer, 400, "validation_error");
      expect(answer.body.message).toContain("file");
      await expectServing();
      await expectStillUsable(ticket);
    });

    it("a file part under another name answers 400 and the upload stays usable", async () => {
      const ticket = await newWorker("wrong-part");
      const answer = await upload(ticket.url, ticket.fields, goodArchive, { fileField: "archive" });
      expectErrorShape(answer, 400, "validation_error");
      await expectServing();
      await expectStillUsable(ticket);
    });

    it("a body that is not multipart answers 415 unsupported_media_type", async () => {
      const ticket = await newWorker("json-upload");
      const answer = await rawRequestTo(ticket.url, {
        headers: { "content-type": "application/json" },
        body: JSON.stringify(ticket.fields),
      });
      expectErrorShape(answer, 415, "unsupported_media_type");
      await expectServing();
      await expectStillUsable(ticket);
    });

    async function tarGz(entries: { path: string; body: string }[]): Promise<Buffer> {
      const dir = tempDir("wy-bad-archive-");
      try {
        for (const entry of entries) {
          fs.mkdirSync(path.dirname(path.join(dir.dir, entry.path)), { recursive: true });
          fs.writeFileSync(path.join(dir.dir, entry.path), entry.body);
        }
        const chunks: Buffer[] = [];
        const stream = createTar({ gzip: true, cwd: dir.dir, portable: true }, entries.map((e) => e.path));
        for await (const chunk of stream as unknown as AsyncIterable<Buffer>) chunks.push(chunk);
        return Buffer.concat(chunks);
      } finally {
        dir.cleanup();
      }
    }

    /** A tar.gz whose one entry is named `name` verbatim (tar itself refuses to write `../` names). */
    function tarGzNamed(name: string, body: string): Buffer {
      const header = Buffer.alloc(512);
      header.write(name, 0, 100, "utf8");
      header.write("0000644\0", 100);
      header.write("0000000\0", 108);
      header.write("0000000\0", 116);
      header.write(`${Buffer.byteLength(body).toString(8).padStart(11, "0")}\0`, 124);
      header.write("00000000000\0", 136);
      header.write("        ", 148);
      header.write("0", 156);
      header.write("ustar\0", 257);
      header.write("00", 263);
      let sum = 0;
      for (const byte of header) sum += byte;
      header.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
      const content = Buffer.alloc(Math.ceil(Buffer.byteLength(body) / 512) * 512);
      content.write(body);
      return zlib.gzipSync(Buffer.concat([header, content, Buffer.alloc(1024)]));
    }

    it.each([
      ["random bytes", () => crypto.randomBytes(4096)],
      ["plain text", () => Buffer.from("this is not an archive\n".repeat(50))],
      ["gzip of text that is not a tar", () => zlib.gzipSync(Buffer.from("not a tar archive\n".repeat(200)))],
      ["a truncated gzip", async () => {
        const whole = await tarGz([{ path: "src/index.ts", body: "export default {};\n".repeat(500) }]);
        return whole.subarray(0, Math.floor(whole.length / 2));
      }],
      ["an empty archive", () => zlib.gzipSync(Buffer.alloc(1024))],
      ["an entry escaping the project (../)", () => tarGzNamed("../escape.ts", "export {};\n")],
      ["an absolute entry path", () => tarGzNamed("/etc/evil.ts", "export {};\n")],
    ])("a corrupt archive (%s) answers 400 archive_invalid and the upload stays usable", async (_label, make) => {
      const ticket = await newWorker("corrupt");
      const answer = await upload(ticket.url, ticket.fields, await make());
      expectErrorShape(answer, 400, "archive_invalid");
      await expectServing();
      await expectStillUsable(ticket);
    });
  });
});

// A server of its own, started after the one above has stopped: one PostgreSQL server per file at a
// time, since a second one in another schema of the same database cannot migrate while the first
// one's Kysely tables exist (store/migrate.ts passes no migrationTableSchema).
describe.each(DIALECTS)("an upload over the limit on %s", (dialect) => {
  let small: TestServer;
  let goodArchive: Buffer;
  beforeAll(async () => {
    small = await startTestServer({ dialect, uploadLimit: 64 * 1024 });
    goodArchive = await goodProjectArchive();
  });
  afterAll(async () => small?.stop());

  async function ticket(name: string): Promise<{ url: string; fields: Record<string, string> }> {
    const created = await small.call("CreateWorker", { name, uploadType: "source" });
    expect(created.status).toBe(200);
    return created.body;
  }

  it("answers 413 archive_too_large, keeps nothing, and the upload stays usable", async () => {
    const { url, fields } = await ticket("big");
    const big = crypto.randomBytes(200 * 1024);
    const answer = await upload(url, fields, big);
    expectErrorShape(answer, 413, "archive_too_large");
    expect((await small.call("ListWorkers", {})).status).toBe(200);
    const row = await small.server.store.db
      .selectFrom("uploads")
      .select(["received_at", "archive_size"])
      .where("id", "=", fields.uploadId!)
      .executeTakeFirstOrThrow();
    expect(row).toEqual({ received_at: null, archive_size: null });
    const ok = await upload(url, fields, goodArchive);
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
  });

  it("an archive just under the limit is judged on its content instead", async () => {
    const { url, fields } = await ticket("edge");
    const answer = await upload(url, fields, crypto.randomBytes(64 * 1024 - 1));
    expectErrorShape(answer, 400, "archive_invalid");
  });
});
