import crypto from "node:crypto";

/** Ids of workspaces, workers, runs...: random UUIDs, as Notion's own ids are. */
export function newId(): string {
  return crypto.randomUUID();
}

/** An opaque random string for tokens, states and verifiers: base64url of `bytes` random bytes. */
export function randomToken(bytes = 32): string {
  return crypto.randomBytes(bytes).toString("base64url");
}

export function sha256Hex(value: string): string {
  return crypto.createHash("sha256").update(value).digest("hex");
}

/** Constant-time equality of two strings (false on length mismatch). */
export function safeEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a);
  const bb = Buffer.from(b);
  return ab.length === bb.length && crypto.timingSafeEqual(ab, bb);
}
