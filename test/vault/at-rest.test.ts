import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { PassThrough } from "node:stream";
import SQLite from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { KeyringError, rotateMasterKey, startServer, type RunningServer, type ServerOptions } from "../../packages/server/src/main.js";
import { generateKey, keyId } from "../../packages/server/src/vault/keyring.js";
import { baseEnv, ntnBinary } from "../helpers/run-ntn.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Secrets at rest on SQLite: canary values set through the API never appear in clear in the
 * database file or its WAL, and key rotation (offline, or beside a running server) re-seals
 * every row under the new key without losing a value.
 */

interface Started {
  server: RunningServer;
  logs(): string;
  call(action: string, body?: unknown): Promise<{ status: number; body: any }>;
  stop(): Promise<void>;
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function dataDir(): string {
  const tmp = tempDir("wy-at-rest-");
  cleanups.push(tmp.cleanup);
  return tmp.dir;
}

/** A real server on 127.0.0.1, port 0, on a data dir that outlives it (startTestServer's does not). */
async function startOn(dir: string, options: ServerOptions = {}): Promise<Started> {
  const logStream = new PassThrough();
  let logText = "";
  logStream.on("data", (chunk: Buffer) => (logText += chunk.toString("utf8")));
  const server = await startServer({ host: "127.0.0.1", port: 0, dataDir: dir, logStream, logLevel: "info", ...options });
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
    logs: () => logText,
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

/** Recognisable values, each unique to this run, in the shapes secrets take. */
function canaries(): Record<string, string> {
  const tag = crypto.randomBytes(6).toString("hex");
  return {
    CANARY_PLAIN: `wy-canary-${tag}-plain`,
    CANARY_SPACES: `wy-canary-${tag} with spaces and "quotes"`,
    CANARY_UNICODE: `wy-canary-${tag}-ünïcødé-✓`,
    CANARY_PEM: `-----BEGIN PRIVATE KEY-----\nwy-canary-${tag}-pem\n-----END PRIVATE KEY-----\n`,
    // Larger than a SQLite page, so it would sit in overflow pages if it were stored in clear.
    CANARY_LONG: `wy-canary-${tag}-long-`.repeat(600),
  };
}

/** The distinctive part of each canary, as UTF-8 bytes. */
function needles(values: Record<string, string>): Buffer[] {
  return Object.values(values).map((v) => Buffer.from(/wy-canary-[0-9a-f]{12}[^\n"]{0,12}/.exec(v)?.[0] ?? v, "utf8"));
}

function storeFiles(dir: string): string[] {
  return ["workyard.db", "workyard.db-wal"].map((f) => path.join(dir, f)).filter((f) => fs.existsSync(f));
}

/** Which canaries appear in clear in any of the files (the answer must be none). */
function foundInClear(files: string[], values: Record<string, string>): string[] {
  const found: string[] = [];
  for (const file of files) {
    const bytes = fs.readFileSync(file);
    for (const needle of needles(values)) if (bytes.includes(needle)) found.push(`${path.basename(file)}: ${needle.toString("utf8")}`);
  }
  return found;
}

/** Every file under the data dir. */
function allFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    return e.isDirectory() ? allFiles(full) : e.isFile() ? [full] : [];
  });
}

async function createWorkerWithSecrets(server: Started, values: Record<string, string>): Promise<string> {
  const created = await server.call("CreateWorker", { name: "at-rest", uploadType: "source" });
  expect(created.status).toBe(200);
  const workerId = created.body.worker.workerId as string;
  const set = await server.call("UpsertSecrets", { workerId, secrets: Object.entries(values).map(([key, value]) => ({ key, value })) });
  expect(set.status).toBe(200);
  expect(set.body.updated).toEqual(Object.keys(values).sort());
  return workerId;
}

async function pulled(server: Started, workerId: string): Promise<Record<string, string>> {
  const response = await server.call("PullEnv", { workerId });
  expect(response.status).toBe(200);
  return Object.fromEntries(response.body.env.map((e: { key: string; value: string }) => [e.key, e.value]));
}

/** The key ids of the secret rows, read straight from the SQLite file. */
function secretKeyIds(dir: string): Record<string, string> {
  const db = new SQLite(path.join(dir, "workyard.db"), { readonly: true, fileMustExist: true });
  try {
    const rows = db.prepare("select name, key_id from secrets order by name").all() as { name: string; key_id: string }[];
    return Object.fromEntries(rows.map((r) => [r.name, r.key_id]));
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

const sameIdFor = (names: string[], id: string) => Object.fromEntries(names.map((n) => [n, id]));

describe("secrets at rest on SQLite", () => {
  it("never stores a secret in clear, and rotate-key re-seals every row under a new key", async () => {
    const dir = dataDir();
    const values = canaries();
    const first = await startOn(dir);
    const workerId = await createWorkerWithSecrets(first, values);

    // While the server runs, the newest rows are likely still in the WAL: read both files.
    const live = storeFiles(dir);
    expect(live.map((f) => path.basename(f))).toContain("workyard.db");
    expect(foundInClear(live, values)).toEqual([]);
    // The names are stored in clear, so finding them shows these are the bytes that hold the rows.
    const raw = Buffer.concat(live.map((f) => fs.readFileSync(f)));
    expect(raw.includes(Buffer.from("CANARY_UNICODE"))).toBe(true);

    await first.stop();
    expect(foundInClear(storeFiles(dir), values)).toEqual([]);
    expect(foundInClear(allFiles(dir), values)).toEqual([]);
    for (const needle of needles(values)) expect(first.logs()).not.toContain(needle.toString("utf8"));

    const keyBefore = fs.readFileSync(path.join(dir, "master.key"), "utf8");
    const [oldId] = keyFileIds(dir);
    expect(secretKeyIds(dir)).toEqual(sameIdFor(Object.keys(values), oldId!));

    const report = await rotateMasterKey({ dataDir: dir, env: {} });
    expect(report.source).toBe("file");
    expect(report.resealed.secrets).toBe(Object.keys(values).length);
    expect(report.keyId).not.toBe(oldId);
    expect(report.removedKeyIds).toEqual([oldId]);

    const keyAfter = fs.readFileSync(path.join(dir, "master.key"), "utf8");
    expect(keyAfter).not.toBe(keyBefore);
    expect(keyFileIds(dir)).toEqual([report.keyId]);
    expect(fs.statSync(path.join(dir, "master.key")).mode & 0o777).toBe(0o600);
    expect(secretKeyIds(dir)).toEqual(sameIdFor(Object.keys(values), report.keyId));
    expect(foundInClear(allFiles(dir), values)).toEqual([]);

    const second = await startOn(dir);
    expect(await pulled(second, workerId)).toEqual(values);
  });

  it("rotates with `ntn server rotate-key` while a server keeps serving on the same data dir", async () => {
    const dir = dataDir();
    const values = canaries();
    const server = await startOn(dir);
    const workerId = await createWorkerWithSecrets(server, values);
    const [oldId] = keyFileIds(dir);
    // Read once before: the server keeps the rows as sealed then (by the worker's secrets version).
    expect(await pulled(server, workerId)).toEqual(values);

    // The data dir through WORKYARD_DATA_DIR here; the --data-dir flag has a test of its own below.
    const home = dataDir();
    const rotated = await ntnBinary(["server", "rotate-key"], { cwd: home, env: { ...baseEnv(home), WORKYARD_DATA_DIR: dir } });
    expect(rotated.stderr).toContain(path.join(dir, "master.key"));
    expect(rotated.stderr).toMatch(/Re-encrypted 5 secrets/);
    expect(rotated.code).toBe(0);
    for (const needle of needles(values)) expect(rotated.stdout + rotated.stderr).not.toContain(needle.toString("utf8"));

    const ids = keyFileIds(dir);
    expect(ids).toHaveLength(1);
    const newId = ids[0]!;
    expect(newId).not.toBe(oldId);
    expect(secretKeyIds(dir)).toEqual(sameIdFor(Object.keys(values), newId));

    // Same process, no restart: once it has read the new key file (it checks at most once a second,
    // when it seals: here another worker's secret) it no longer holds the old key, and still reads
    // the rows it kept sealed under it, now re-sealed under the key it did not start with...
    await new Promise((r) => setTimeout(r, 1100));
    await createWorkerWithSecrets(server, { OTHER: "wy-canary-other-worker" });
    expect(secretKeyIds(dir).OTHER).toBe(newId);
    expect(await pulled(server, workerId)).toEqual(values);
    // ...and seals new values under the new key.
    const added = await server.call("UpsertSecrets", { workerId, secrets: [{ key: "AFTER_ROTATION", value: "wy-canary-after-rotation" }] });
    expect(added.status).toBe(200);
    expect(secretKeyIds(dir).AFTER_ROTATION).toBe(newId);
    expect(await pulled(server, workerId)).toEqual({ ...values, AFTER_ROTATION: "wy-canary-after-rotation" });
    expect(foundInClear(storeFiles(dir), { ...values, AFTER_ROTATION: "wy-canary-after-rotation" })).toEqual([]);
  });

  it("`ntn server rotate-key --data-dir D` rotates the keys of D, not of the default data dir", async () => {
    const dir = dataDir();
    const server = await startOn(dir);
    await createWorkerWithSecrets(server, { ONE: "wy-canary-flag-1", TWO: "wy-canary-flag-2" });
    await server.stop();
    const [oldId] = keyFileIds(dir);

    const home = dataDir();
    const rotated = await ntnBinary(["server", "rotate-key", "--data-dir", dir], { cwd: home, env: baseEnv(home) });
    expect(rotated.code).toBe(0);
    expect(rotated.stderr).toContain(path.join(dir, "master.key"));
    expect(rotated.stderr).toMatch(/Re-encrypted 2 secrets/);
    expect(keyFileIds(dir)).toHaveLength(1);
    expect(keyFileIds(dir)[0]).not.toBe(oldId);
    expect(Object.values(secretKeyIds(dir))).toEqual([keyFileIds(dir)[0], keyFileIds(dir)[0]]);
    // Nothing was created in the default data dir ($XDG_DATA_HOME/workyard).
    expect(fs.existsSync(path.join(home, ".local/share/workyard"))).toBe(false);
  });

  it("with WORKYARD_MASTER_KEY, refuses to start with a key list that lacks the key the data is sealed under", async () => {
    const dir = dataDir();
    const values = canaries();
    const oldKey = generateKey();
    const newKey = generateKey();
    const oldId = keyId(Buffer.from(oldKey, "base64"));
    const newId = keyId(Buffer.from(newKey, "base64"));

    const first = await startOn(dir, { masterKeys: oldKey });
    const workerId = await createWorkerWithSecrets(first, values);
    await first.stop();
    // The key comes from the environment: no key file is generated beside the data.
    expect(fs.existsSync(path.join(dir, "master.key"))).toBe(false);
    expect(secretKeyIds(dir)).toEqual(sameIdFor(Object.keys(values), oldId));

    // Before rotation, a server given only the new key cannot read the data: it refuses to start.
    const early = await startServer({ host: "127.0.0.1", port: 0, dataDir: dir, masterKeys: newKey, logStream: new PassThrough() }).then(
      (s) => (cleanups.push(() => s.stop()), undefined),
      (e: unknown) => e,
    );
    expect(early).toBeInstanceOf(KeyringError);
    expect((early as Error).message).toContain(oldId);

    const report = await rotateMasterKey({ dataDir: dir, env: { WORKYARD_MASTER_KEY: `${newKey},${oldKey}` } });
    expect(report).toMatchObject({ source: "env", keyId: newId, removedKeyIds: [] });
    expect(report.resealed.secrets).toBe(Object.keys(values).length);
    expect(secretKeyIds(dir)).toEqual(sameIdFor(Object.keys(values), newId));
    expect(fs.existsSync(path.join(dir, "master.key"))).toBe(false);

    const refused = await startServer({ host: "127.0.0.1", port: 0, dataDir: dir, masterKeys: oldKey, logStream: new PassThrough() }).then(
      (s) => (cleanups.push(() => s.stop()), undefined),
      (e: unknown) => e,
    );
    expect(refused).toBeInstanceOf(KeyringError);
    const message = (refused as Error).message;
    expect(message).toContain(newId);
    expect(message).toMatch(/WORKYARD_MASTER_KEY/);
    expect(message).not.toContain(oldKey);
    expect(message).not.toContain(newKey);

    // With the new key alone, it starts and every value is there.
    const second = await startOn(dir, { masterKeys: newKey });
    expect(await pulled(second, workerId)).toEqual(values);
  });
});
