import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";

export const KEY_BYTES = 32;

export interface MasterKey {
  /** Short public id recorded beside every ciphertext: hex of SHA-256("workyard key id" | key), 16 chars. */
  id: string;
  key: Buffer;
}

export class KeyringError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "KeyringError";
  }
}

export function keyId(key: Buffer): string {
  return crypto.createHash("sha256").update("workyard key id\0").update(key).digest("hex").slice(0, 16);
}

function parseKeys(text: string, source: string): MasterKey[] {
  const keys: MasterKey[] = [];
  for (const raw of text.split(/[\s,]+/)) {
    const item = raw.trim();
    if (!item || item.startsWith("#")) continue;
    const key = Buffer.from(item, "base64");
    if (key.length !== KEY_BYTES || key.toString("base64").replace(/=+$/, "") !== item.replace(/=+$/, "")) {
      // Never echo the value: it is (meant to be) a key.
      throw new KeyringError(`${source} holds a value that is not base64 of ${KEY_BYTES} bytes.`);
    }
    keys.push({ id: keyId(key), key });
  }
  if (keys.length === 0) throw new KeyringError(`${source} holds no key.`);
  return keys;
}

export function generateKey(): string {
  return crypto.randomBytes(KEY_BYTES).toString("base64");
}

/**
 * The master keys, newest first: the first seals, any of them opens. They come from
 * WORKYARD_MASTER_KEY (comma separated) or from `<dataDir>/master.key` (one per line, mode 0600),
 * never from the store. In file mode the keyring re-reads the file when it meets a key id it lacks
 * or when the file changed, so `ntn server rotate-key` takes effect in running servers.
 */
export class Keyring {
  private keys: MasterKey[];
  private fileMtimeMs = 0;
  private lastStatAt = 0;

  private constructor(
    keys: MasterKey[],
    readonly source: "env" | "file",
    readonly file: string | undefined,
  ) {
    this.keys = keys;
    if (file) this.fileMtimeMs = fs.statSync(file).mtimeMs;
  }

  static fromEnv(value: string): Keyring {
    return new Keyring(parseKeys(value, "WORKYARD_MASTER_KEY"), "env", undefined);
  }

  static fromFile(file: string): Keyring {
    return new Keyring(parseKeys(fs.readFileSync(file, "utf8"), file), "file", file);
  }

  /** Creates `<dataDir>/master.key` with a fresh key, unless another process just did. */
  static createFile(file: string): Keyring {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    try {
      fs.writeFileSync(file, `${generateKey()}\n`, { mode: 0o600, flag: "wx" });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
    return Keyring.fromFile(file);
  }

  /** The key that seals. In file mode, checks the file at most once a second for a newer key. */
  current(): MasterKey {
    if (this.file && Date.now() - this.lastStatAt > 1000) {
      this.lastStatAt = Date.now();
      this.reloadIfChanged();
    }
    return this.keys[0]!;
  }

  get(id: string): MasterKey | undefined {
    let found = this.keys.find((k) => k.id === id);
    if (!found && this.file) {
      this.reloadIfChanged(true);
      found = this.keys.find((k) => k.id === id);
    }
    return found;
  }

  ids(): string[] {
    return this.keys.map((k) => k.id);
  }

  /** Puts a new key first in the key file (file mode only); the old keys stay to open old data. */
  prependToFile(newKeyBase64: string): MasterKey {
    if (!this.file) throw new KeyringError("The keyring comes from WORKYARD_MASTER_KEY; add the new key there.");
    const existing = fs.readFileSync(this.file, "utf8").trim();
    const tmp = `${this.file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, `${newKeyBase64}\n${existing}\n`, { mode: 0o600 });
    fs.renameSync(tmp, this.file);
    this.reloadIfChanged(true);
    return this.keys[0]!;
  }

  /** Rewrites the key file with only the given key ids (file mode), after rotation left the rest unused. */
  retainInFile(ids: string[]): void {
    if (!this.file) return;
    const kept = this.keys.filter((k) => ids.includes(k.id));
    if (kept.length === 0) throw new KeyringError("Refusing to remove every key from the key file.");
    const tmp = `${this.file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, kept.map((k) => k.key.toString("base64")).join("\n") + "\n", { mode: 0o600 });
    fs.renameSync(tmp, this.file);
    this.reloadIfChanged(true);
  }

  private reloadIfChanged(force = false): void {
    if (!this.file) return;
    try {
      const mtime = fs.statSync(this.file).mtimeMs;
      if (!force && mtime === this.fileMtimeMs) return;
      this.keys = parseKeys(fs.readFileSync(this.file, "utf8"), this.file);
      this.fileMtimeMs = mtime;
    } catch {
      // Keep the keys we have: a half-replaced or unreadable file must not take a server down.
    }
  }
}
