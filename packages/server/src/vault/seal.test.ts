import { describe, expect, it } from "vitest";
import { generateKey, Keyring } from "./keyring.js";
import { aad, open, openText, seal, VaultError } from "./seal.js";

const keyring = () => Keyring.fromEnv(generateKey());

describe("seal / open", () => {
  const where = aad.secret("ws_1", "wk_1", "API_KEY");

  it("round-trips a value and records the sealing key id", () => {
    const ring = keyring();
    const sealed = seal(ring, "canary-seal-value ✓", where);
    expect(sealed.keyId).toBe(ring.current().id);
    expect(sealed.sealed.includes(Buffer.from("canary-seal-value"))).toBe(false);
    expect(openText(ring, sealed, where)).toBe("canary-seal-value ✓");
  });

  it("round-trips an empty value and binary data", () => {
    const ring = keyring();
    expect(openText(ring, seal(ring, "", where), where)).toBe("");
    const bytes = Buffer.from([0, 1, 2, 255, 254]);
    expect(open(ring, seal(ring, bytes, where), where)).toEqual(bytes);
  });

  it("uses a fresh nonce per value: the same plaintext twice gives different ciphertexts", () => {
    const ring = keyring();
    const a = seal(ring, "same plaintext", where);
    const b = seal(ring, "same plaintext", where);
    expect(a.sealed.equals(b.sealed)).toBe(false);
    expect(a.sealed.subarray(0, 12).equals(b.sealed.subarray(0, 12))).toBe(false);
    expect(openText(ring, a, where)).toBe("same plaintext");
    expect(openText(ring, b, where)).toBe("same plaintext");
  });

  it("refuses a value moved to another row (different associated data)", () => {
    const ring = keyring();
    const sealed = seal(ring, "moved", where);
    for (const other of [
      aad.secret("ws_1", "wk_1", "OTHER_KEY"),
      aad.secret("ws_1", "wk_2", "API_KEY"),
      aad.secret("ws_2", "wk_1", "API_KEY"),
      aad.manifest("ws_1", "wk_1", "API_KEY"),
    ]) {
      expect(() => open(ring, sealed, other)).toThrow(VaultError);
      expect(() => open(ring, sealed, other)).toThrow(/failed authentication/);
    }
  });

  it("refuses a tampered ciphertext, nonce or tag", () => {
    const ring = keyring();
    const sealed = seal(ring, "do not touch this value", where);
    for (const index of [0, 12, Math.floor(sealed.sealed.length / 2), sealed.sealed.length - 1]) {
      const tampered = Buffer.from(sealed.sealed);
      tampered[index] = tampered[index]! ^ 0x01;
      expect(() => open(ring, { keyId: sealed.keyId, sealed: tampered }, where)).toThrow(VaultError);
    }
  });

  it("refuses a truncated value", () => {
    const ring = keyring();
    const sealed = seal(ring, "x", where);
    expect(() => open(ring, { keyId: sealed.keyId, sealed: sealed.sealed.subarray(0, 20) }, where)).toThrow(VaultError);
    expect(() => open(ring, { keyId: sealed.keyId, sealed: sealed.sealed.subarray(0, sealed.sealed.length - 1) }, where)).toThrow(
      VaultError,
    );
  });

  it("names the unknown key id when a value was sealed under a key this keyring lacks", () => {
    const writer = keyring();
    const reader = keyring();
    const sealed = seal(writer, "secret", where);
    let error: unknown;
    try {
      open(reader, sealed, where);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(VaultError);
    expect((error as Error).message).toContain(sealed.keyId);
    expect((error as Error).message).toMatch(/does not have/);
    expect((error as Error).message).not.toContain("secret");
  });

  it("keeps the associated data of each kind distinct", () => {
    const parts = ["ws", "wk", "x"] as const;
    const all = [aad.secret(...parts), aad.manifest(...parts), aad.oauthCredentials(...parts), aad.oauthFlow(...parts), aad.archive(...parts)];
    expect(new Set(all).size).toBe(all.length);
    // NUL separates parts, so shifting text from one part to the next gives other data.
    expect(aad.secret("ab", "c", "d")).not.toBe(aad.secret("a", "bc", "d"));
  });

  it("seals a source archive's bytes bound to its upload", () => {
    const ring = keyring();
    const bytes = Buffer.concat([Buffer.from([0x1f, 0x8b, 0x08]), Buffer.from("canary-archive-content".repeat(100))]);
    const where = aad.archive("ws_1", "wk_1", "up_1");
    const sealed = seal(ring, bytes, where);
    expect(sealed.sealed.includes(Buffer.from("canary-archive-content"))).toBe(false);
    expect(open(ring, sealed, where).equals(bytes)).toBe(true);
    expect(() => open(ring, sealed, aad.archive("ws_1", "wk_1", "up_2"))).toThrow(VaultError);
    expect(() => open(ring, sealed, aad.archive("ws_1", "wk_2", "up_1"))).toThrow(VaultError);
  });
});
