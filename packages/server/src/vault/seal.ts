import crypto from "node:crypto";
import type { Keyring } from "./keyring.js";

/** A ciphertext as stored: the id of the key that sealed it, and nonce | ciphertext | tag. */
export interface Sealed {
  keyId: string;
  sealed: Buffer;
}

export class VaultError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "VaultError";
  }
}

const NONCE_BYTES = 12;
const TAG_BYTES = 16;

/**
 * AES-256-GCM with a fresh random nonce per value. `aad` binds the ciphertext to where it is stored
 * (workspace, worker, name...), so a value copied to another row fails to open.
 */
export function seal(keyring: Keyring, plaintext: string | Buffer, aad: string): Sealed {
  const { id, key } = keyring.current();
  return { keyId: id, sealed: sealWithKey(key, plaintext, aad) };
}

export function open(keyring: Keyring, value: Sealed, aad: string): Buffer {
  const master = keyring.get(value.keyId);
  if (!master) {
    throw new VaultError(`A value is sealed under master key ${value.keyId}, which this server does not have.`);
  }
  return openWithKey(master.key, value.sealed, aad);
}

/** nonce | ciphertext | tag under `key`: a master key's, or a key that lives in one process's memory. */
export function sealWithKey(key: Buffer, plaintext: string | Buffer, aad: string): Buffer {
  const nonce = crypto.randomBytes(NONCE_BYTES);
  const cipher = crypto.createCipheriv("aes-256-gcm", key, nonce);
  cipher.setAAD(Buffer.from(aad, "utf8"));
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([nonce, body, cipher.getAuthTag()]);
}

export function openWithKey(key: Buffer, sealed: Buffer, aad: string): Buffer {
  if (sealed.length < NONCE_BYTES + TAG_BYTES) throw new VaultError("A sealed value is truncated.");
  const decipher = crypto.createDecipheriv("aes-256-gcm", key, sealed.subarray(0, NONCE_BYTES));
  decipher.setAAD(Buffer.from(aad, "utf8"));
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  try {
    return Buffer.concat([decipher.update(sealed.subarray(NONCE_BYTES, sealed.length - TAG_BYTES)), decipher.final()]);
  } catch {
    throw new VaultError("A sealed value failed authentication (wrong key or moved between rows).");
  }
}

export function openText(keyring: Keyring, value: Sealed, aad: string): string {
  return open(keyring, value, aad).toString("utf8");
}

/**
 * Associated data for each kind of sealed value: one definition, used to seal, to open and to
 * re-seal during rotation. NUL separates parts, which no id or name can contain.
 */
export const aad = {
  secret: (workspaceId: string, workerId: string, name: string) => `secret\0${workspaceId}\0${workerId}\0${name}`,
  manifest: (workspaceId: string, workerId: string, deploymentId: string) =>
    `manifest\0${workspaceId}\0${workerId}\0${deploymentId}`,
  oauthCredentials: (workspaceId: string, workerId: string, capabilityKey: string) =>
    `oauth\0${workspaceId}\0${workerId}\0${capabilityKey}`,
  oauthFlow: (workspaceId: string, workerId: string, flowId: string) => `oauth-flow\0${workspaceId}\0${workerId}\0${flowId}`,
  /** A source archive as uploaded (bytes, not text). */
  archive: (workspaceId: string, workerId: string, uploadId: string) => `archive\0${workspaceId}\0${workerId}\0${uploadId}`,
  /** A deployment's bundle and source map, as JSON `{code, sourceMap}`. */
  bundle: (workspaceId: string, workerId: string, deploymentId: string) => `bundle\0${workspaceId}\0${workerId}\0${deploymentId}`,
  /** A webhook URL's secret id. */
  webhookSecret: (workspaceId: string, workerId: string, key: string) => `webhook\0${workspaceId}\0${workerId}\0${key}`,
  /** A webhook delivery's request, as JSON `{method, headers, body}` (body in base64). */
  webhookDelivery: (workspaceId: string, workerId: string, deliveryId: string) => `webhook-delivery\0${workspaceId}\0${workerId}\0${deliveryId}`,
};
