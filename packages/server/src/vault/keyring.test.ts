import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { generateKey, KEY_BYTES, keyId, Keyring, KeyringError } from "./keyring.js";
import { aad, openText, seal } from "./seal.js";

const where = aad.secret("ws", "wk", "NAME");

function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (error) {
    return error as Error;
  }
  throw new Error("expected a throw");
}

describe("Keyring.fromEnv", () => {
  it("seals with the first key of the list and opens with any of them", () => {
    const newest = generateKey();
    const older = generateKey();
    const oldRing = Keyring.fromEnv(older);
    const ring = Keyring.fromEnv(`${newest},${older}`);
    expect(ring.source).toBe("env");
    expect(ring.ids()).toEqual([keyId(Buffer.from(newest, "base64")), keyId(Buffer.from(older, "base64"))]);
    expect(ring.current().id).toBe(keyId(Buffer.from(newest, "base64")));

    const before = seal(oldRing, "sealed before rotation", where);
    expect(openText(ring, before, where)).toBe("sealed before rotation");
    const after = seal(ring, "sealed after rotation", where);
    expect(after.keyId).toBe(ring.current().id);
    expect(after.keyId).not.toBe(before.keyId);
  });

  it("accepts commas, spaces and newlines between keys", () => {
    const a = generateKey();
    const b = generateKey();
    expect(Keyring.fromEnv(` ${a} ,\n ${b}\n`).ids()).toEqual(Keyring.fromEnv(`${a},${b}`).ids());
  });

  it("gives stable 16-character ids that differ between keys", () => {
    const key = generateKey();
    expect(Keyring.fromEnv(key).current().id).toBe(Keyring.fromEnv(key).current().id);
    expect(Keyring.fromEnv(key).current().id).toMatch(/^[0-9a-f]{16}$/);
    expect(Keyring.fromEnv(generateKey()).current().id).not.toBe(Keyring.fromEnv(key).current().id);
    expect(Buffer.from(generateKey(), "base64")).toHaveLength(KEY_BYTES);
  });

  const bad: [string, string][] = [
    ["not base64 at all", "this-is-not-a-key!!"],
    ["too short", crypto.randomBytes(16).toString("base64")],
    ["too long", crypto.randomBytes(48).toString("base64")],
    ["a stray character", generateKey().slice(0, 20) + "*" + generateKey().slice(21)],
  ];
  it.each(bad)("rejects a value that is %s, without echoing it", (_label, value) => {
    const error = thrown(() => Keyring.fromEnv(value));
    expect(error).toBeInstanceOf(KeyringError);
    expect(error.message).toContain("WORKYARD_MASTER_KEY");
    expect(error.message).toMatch(/base64 of 32 bytes/);
    expect(error.message).not.toContain(value);
    expect(error.message).not.toContain(value.slice(0, 8));
  });

  it("rejects the whole list when one key is bad, without echoing the good ones", () => {
    const good = generateKey();
    const error = thrown(() => Keyring.fromEnv(`${good},short`));
    expect(error).toBeInstanceOf(KeyringError);
    expect(error.message).not.toContain(good);
    expect(error.message).not.toContain("short");
  });

  it("rejects an empty list", () => {
    expect(() => Keyring.fromEnv(" , ")).toThrow(KeyringError);
    expect(() => Keyring.fromEnv(" , ")).toThrow(/no key/);
  });

  it("cannot write to a key file", () => {
    const ring = Keyring.fromEnv(generateKey());
    expect(() => ring.prependToFile(generateKey())).toThrow(KeyringError);
    expect(() => ring.prependToFile(generateKey())).toThrow(/WORKYARD_MASTER_KEY/);
  });
});

describe("Keyring key file", () => {
  let dir: string;
  let file: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "wy-keyring-"));
    file = path.join(dir, "data", "master.key");
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const lines = () => fs.readFileSync(file, "utf8").split("\n").filter(Boolean);

  it("createFile makes a 0600 file holding one key, and a second call keeps it", () => {
    const first = Keyring.createFile(file);
    expect(first.source).toBe("file");
    expect(first.file).toBe(file);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(lines()).toHaveLength(1);
    expect(Buffer.from(lines()[0]!, "base64")).toHaveLength(32);
    const content = fs.readFileSync(file, "utf8");

    const second = Keyring.createFile(file);
    expect(second.current().id).toBe(first.current().id);
    expect(fs.readFileSync(file, "utf8")).toBe(content);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
  });

  it("fromFile names the file but not the value when it holds a bad key", () => {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, "bm90LWEta2V5LWF0LWFsbA==\n", { mode: 0o600 });
    const error = thrown(() => Keyring.fromFile(file));
    expect(error).toBeInstanceOf(KeyringError);
    expect(error.message).toContain(file);
    expect(error.message).not.toContain("bm90LWEta2V5LWF0LWFsbA");
  });

  it("prependToFile puts a new key first and keeps the old one; retainInFile drops the rest", () => {
    const ring = Keyring.createFile(file);
    const oldId = ring.current().id;
    const before = seal(ring, "old value", where);

    const fresh = generateKey();
    const added = ring.prependToFile(fresh);
    expect(added.id).toBe(keyId(Buffer.from(fresh, "base64")));
    expect(ring.current().id).toBe(added.id);
    expect(ring.ids()).toEqual([added.id, oldId]);
    expect(lines()).toHaveLength(2);
    expect(lines()[0]).toBe(fresh);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(openText(ring, before, where)).toBe("old value");
    expect(fs.readdirSync(path.dirname(file))).toEqual(["master.key"]);

    ring.retainInFile([added.id]);
    expect(lines()).toEqual([fresh]);
    expect(ring.ids()).toEqual([added.id]);
    expect(ring.get(oldId)).toBeUndefined();
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(Keyring.fromFile(file).ids()).toEqual([added.id]);
  });

  it("retainInFile refuses to remove every key", () => {
    const ring = Keyring.createFile(file);
    const content = fs.readFileSync(file, "utf8");
    expect(() => ring.retainInFile([])).toThrow(KeyringError);
    expect(() => ring.retainInFile(["0000000000000000"])).toThrow(KeyringError);
    expect(fs.readFileSync(file, "utf8")).toBe(content);
  });

  it("a second keyring on the same file picks up a prepended key when it meets its id", () => {
    const writer = Keyring.createFile(file);
    const reader = Keyring.fromFile(file);
    const oldId = reader.current().id;

    const added = writer.prependToFile(generateKey());
    const sealedByWriter = seal(writer, "written under the new key", where);
    expect(sealedByWriter.keyId).toBe(added.id);

    expect(reader.get(added.id)?.id).toBe(added.id);
    expect(openText(reader, sealedByWriter, where)).toBe("written under the new key");
    expect(reader.ids()).toEqual([added.id, oldId]);
  });

  it("keeps its keys when the file turns unreadable", () => {
    const ring = Keyring.createFile(file);
    const id = ring.current().id;
    fs.writeFileSync(file, "garbage\n");
    expect(ring.get("ffffffffffffffff")).toBeUndefined();
    expect(ring.get(id)?.id).toBe(id);
    expect(ring.current().id).toBe(id);
  });
});
