import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import zlib from "node:zlib";
import { create } from "tar";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AppError } from "../errors.js";
import { ARCHIVE_LIMITS, extractArchive, extractArchiveFile, inspectArchive, inspectArchiveFile } from "./archive.js";

/** One hand-made ustar entry: a 512-byte header (any path, as an attacker would write it), then the body. */
function tarEntry(name: string, body: string | Buffer = "", options: { type?: string; size?: number; linkname?: string } = {}): Buffer {
  const data = Buffer.from(body);
  const header = Buffer.alloc(512);
  const put = (text: string, offset: number, length: number) => header.write(text, offset, length, "utf8");
  const octal = (n: number, length: number) => n.toString(8).padStart(length - 1, "0") + "\0";
  put(name, 0, 100);
  put(octal(0o644, 8), 100, 8);
  put(octal(0, 8), 108, 8);
  put(octal(0, 8), 116, 8);
  put(octal(options.size ?? data.length, 12), 124, 12);
  put(octal(0, 12), 136, 12);
  put(" ".repeat(8), 148, 8);
  put(options.type ?? "0", 156, 1);
  put(options.linkname ?? "", 157, 100);
  put("ustar\u000000", 257, 8);
  let sum = 0;
  for (const byte of header) sum += byte;
  put(sum.toString(8).padStart(6, "0") + "\0 ", 148, 8);
  const padding = Buffer.alloc((512 - (data.length % 512)) % 512);
  return Buffer.concat([header, data, padding]);
}

function tarGz(entries: Buffer[], end = true): Buffer {
  return zlib.gzipSync(Buffer.concat([...entries, ...(end ? [Buffer.alloc(1024)] : [])]));
}

async function rejection(promise: Promise<unknown>): Promise<AppError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(AppError);
    return error as AppError;
  }
  throw new Error("expected the archive to be rejected");
}

describe("inspectArchive", () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "wy-archive-"));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("lists the regular files of an archive made by the tar package", async () => {
    fs.mkdirSync(path.join(dir, "src/lib"), { recursive: true });
    fs.writeFileSync(path.join(dir, "package.json"), "{}");
    fs.writeFileSync(path.join(dir, "src/index.ts"), "export default 1;\n");
    fs.writeFileSync(path.join(dir, "src/lib/util.ts"), "export const x = 2;\n");
    const chunks: Buffer[] = [];
    for await (const chunk of create({ gzip: true, cwd: dir, portable: true }, ["."]) as unknown as AsyncIterable<Buffer>) chunks.push(chunk);
    const listing = await inspectArchive(Buffer.concat(chunks));
    expect(listing.files.sort()).toEqual(["package.json", "src/index.ts", "src/lib/util.ts"]);
    expect(listing.unpackedBytes).toBe(2 + 18 + 20);
    expect(listing.skipped).toEqual([]);
  });

  it("normalises ./ prefixes and lists links as skipped", async () => {
    const listing = await inspectArchive(
      tarGz([
        tarEntry("./a.ts", "a"),
        tarEntry("./dir/", "", { type: "5" }),
        tarEntry("./dir/b.ts", "bb"),
        tarEntry("link.ts", "", { type: "2", linkname: "/etc/passwd" }),
      ]),
    );
    expect(listing.files).toEqual(["a.ts", "dir/b.ts"]);
    expect(listing.unpackedBytes).toBe(3);
    expect(listing.skipped).toEqual(["link.ts (SymbolicLink)"]);
  });

  it.each([
    ["plain text", Buffer.from("this is not an archive at all, just some text\n".repeat(20))],
    ["random-looking bytes", Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) % 251))],
    ["an empty body", Buffer.alloc(0)],
    ["a gzip of nothing", zlib.gzipSync(Buffer.alloc(0))],
    ["a gzip of text", zlib.gzipSync(Buffer.from("hello world\n".repeat(100)))],
    ["an archive with no entries", tarGz([])],
  ])("rejects %s", async (_label, archive) => {
    const error = await rejection(inspectArchive(archive));
    expect(error.code).toBe("archive_invalid");
    expect(error.status).toBe(400);
    expect(error.message).toMatch(/not a valid \.tar\.gz/);
  });

  it("rejects a truncated gzip stream", async () => {
    const whole = tarGz([tarEntry("a.ts", "x".repeat(5000)), tarEntry("b.ts", "y".repeat(5000))]);
    await expect(inspectArchive(whole)).resolves.toMatchObject({ files: ["a.ts", "b.ts"] });
    for (const length of [10, Math.floor(whole.length / 2), whole.length - 4]) {
      const error = await rejection(inspectArchive(whole.subarray(0, length)));
      expect(error.code).toBe("archive_invalid");
    }
  });

  it("rejects a tar cut off in the middle of a file", async () => {
    const cut = Buffer.concat([tarEntry("a.ts", "x".repeat(2000))]).subarray(0, 1024);
    const error = await rejection(inspectArchive(zlib.gzipSync(cut)));
    expect(error.code).toBe("archive_invalid");
  });

  it.each([["../evil.js"], ["src/../../evil.js"], ["./../evil.js"], ["a/b/../../../evil.js"], ["..\\evil.js"], ["/etc/evil.js"], ["C:/evil.js"]])(
    "rejects an entry at %j, outside the project",
    async (name) => {
      const error = await rejection(inspectArchive(tarGz([tarEntry("ok.ts", "fine"), tarEntry(name, "pwned")])));
      expect(error.code).toBe("archive_invalid");
      expect(error.message).toContain("outside the project");
    },
  );

  it("rejects a directory entry outside the project too", async () => {
    const error = await rejection(inspectArchive(tarGz([tarEntry("../outside/", "", { type: "5" }), tarEntry("a.ts", "a")])));
    expect(error.code).toBe("archive_invalid");
  });

  // A file and a directory at one path (or a file named `.`) can never be unpacked: the upload
  // check must say so with archive_invalid (a 400), not let the build fail later.
  it.each([
    ["a file, then a file under it", [tarEntry("a", "x"), tarEntry("a/b", "y")]],
    ["a file under a path, then a file at it", [tarEntry("a/b", "y"), tarEntry("a", "x")]],
    ["a file named .", [tarEntry("ok.ts", "y"), tarEntry(".", "x")]],
  ])("rejects %s", async (_label, entries) => {
    const error = await rejection(inspectArchive(tarGz(entries)));
    expect(error.code).toBe("archive_invalid");
  });

  it("accepts an archive at the entry limit and rejects one entry more", async () => {
    const entries = Array.from({ length: ARCHIVE_LIMITS.maxEntries }, (_, i) => tarEntry(`f/${i}.txt`));
    await expect(inspectArchive(tarGz(entries))).resolves.toMatchObject({ unpackedBytes: 0 });
    const error = await rejection(inspectArchive(tarGz([...entries, tarEntry("one-more.txt")])));
    expect(error.code).toBe("archive_invalid");
    expect(error.message).toContain(`more than ${ARCHIVE_LIMITS.maxEntries} entries`);
  });

  it("rejects an entry that claims more than the unpacked limit before reading its data", async () => {
    const header = tarEntry("bomb.bin", "", { size: ARCHIVE_LIMITS.maxUnpackedBytes + 1 });
    const error = await rejection(inspectArchive(tarGz([header], false)));
    expect(error.code).toBe("archive_too_large");
    expect(error.status).toBe(413);
  });
});

describe("extractArchive", () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "wy-extract-"));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("writes the regular files, with their content, under the directory", async () => {
    const big = Buffer.alloc(200_000, 7);
    const listing = await extractArchive(
      tarGz([
        tarEntry("./package.json", '{"name":"w"}'),
        tarEntry("src/", "", { type: "5" }),
        tarEntry("src/index.ts", "export default 1;\n"),
        tarEntry("deep/er/still/data.bin", big),
        tarEntry("src/link.ts", "", { type: "2", linkname: "../../../etc/passwd" }),
        tarEntry("empty.txt", ""),
      ]),
      dir,
    );
    expect(listing.files).toEqual(["package.json", "src/index.ts", "deep/er/still/data.bin", "empty.txt"]);
    expect(fs.readFileSync(path.join(dir, "package.json"), "utf8")).toBe('{"name":"w"}');
    expect(fs.readFileSync(path.join(dir, "src/index.ts"), "utf8")).toBe("export default 1;\n");
    expect(fs.readFileSync(path.join(dir, "deep/er/still/data.bin")).equals(big)).toBe(true);
    expect(fs.readFileSync(path.join(dir, "empty.txt"), "utf8")).toBe("");
    expect(fs.existsSync(path.join(dir, "src/link.ts"))).toBe(false);
    expect(fs.statSync(path.join(dir, "src/index.ts")).mode & 0o777).toBe(0o644);
  });

  it("rejects with archive_invalid, not a file system error, when a file and a directory share a path", async () => {
    const error = await rejection(extractArchive(tarGz([tarEntry("a", "x"), tarEntry("a/b", "y")]), dir));
    expect(error.code).toBe("archive_invalid");
  });

  it("writes nothing outside the directory for an archive with an escaping entry", async () => {
    const target = path.join(dir, "project");
    fs.mkdirSync(target);
    const error = await rejection(extractArchive(tarGz([tarEntry("../escaped.txt", "pwned")]), target));
    expect(error.code).toBe("archive_invalid");
    expect(fs.existsSync(path.join(dir, "escaped.txt"))).toBe(false);
  });
});

/** A gzip of `bytes` zeros, made in chunks (a gzip bomb, as small as deflate makes it). */
async function gzipOfZeros(bytes: number, prefix: Buffer = Buffer.alloc(0)): Promise<Buffer> {
  const gzip = zlib.createGzip({ level: 9 });
  const chunks: Buffer[] = [];
  gzip.on("data", (chunk: Buffer) => chunks.push(chunk));
  const ended = new Promise((resolve) => gzip.on("end", resolve));
  gzip.write(prefix);
  const zeros = Buffer.alloc(1024 * 1024);
  for (let left = bytes; left > 0; left -= zeros.length) {
    if (!gzip.write(left >= zeros.length ? zeros : zeros.subarray(0, left))) await new Promise((resolve) => gzip.once("drain", resolve));
  }
  gzip.end();
  await ended;
  return Buffer.concat(chunks);
}

describe("reading within limits, in a thread of its own", () => {
  const small = { maxUnpackedBytes: 2 * 1024 * 1024, maxOverheadBytes: 1024 * 1024 };

  it("refuses a gzip bomb by the bytes it actually inflates to", async () => {
    const bomb = await gzipOfZeros(64 * 1024 * 1024);
    expect(bomb.length).toBeLessThan(256 * 1024);
    const error = await rejection(inspectArchive(bomb, { limits: small }));
    expect(error.code).toBe("archive_too_large");
    expect(error.message).toBe("The source archive unpacks to more than 2 MiB.");
  });

  it("counts zeros after the end of a valid archive too", async () => {
    const valid = Buffer.concat([tarEntry("a.ts", "export {};\n"), Buffer.alloc(1024)]);
    await expect(inspectArchive(zlib.gzipSync(valid), { limits: small })).resolves.toMatchObject({ files: ["a.ts"] });
    const error = await rejection(inspectArchive(await gzipOfZeros(8 * 1024 * 1024, valid), { limits: small }));
    expect(error.code).toBe("archive_too_large");
  });

  it("counts the body of an entry whose size is not a file's (a directory declaring 16 MiB)", async () => {
    const bomb = await gzipOfZeros(16 * 1024 * 1024, tarEntry("dir/", "", { type: "5", size: 16 * 1024 * 1024 }));
    const error = await rejection(inspectArchive(bomb, { limits: small }));
    expect(error.code).toBe("archive_too_large");
  });

  it("refuses an entry declaring 2 GiB at its header, with the default limits", async () => {
    const archive = tarGz([tarEntry("big.bin", "", { size: 2 * 1024 ** 3 }), crypto.randomBytes(2 * 1024 * 1024)], false);
    const error = await rejection(inspectArchive(archive));
    expect(error.code).toBe("archive_too_large");
    expect(error.message).toContain(`${ARCHIVE_LIMITS.maxUnpackedBytes / 1048576} MiB`);
  });

  it("stops a reader that runs past its deadline", async () => {
    const error = await rejection(inspectArchive(tarGz([tarEntry("a.ts", "a")]), { limits: { deadlineMs: 1 } }));
    expect(error.code).toBe("archive_too_large");
    expect(error.message).toMatch(/took longer than/);
  });

  it("refuses a second layer of gzip instead of letting tar inflate it uncounted", async () => {
    const error = await rejection(inspectArchive(zlib.gzipSync(tarGz([tarEntry("a.ts", "a")]))));
    expect(error.code).toBe("archive_invalid");
    expect(error.message).toContain("compressed twice");
  });

  it("reads an uncompressed tar as before", async () => {
    const listing = await inspectArchive(Buffer.concat([tarEntry("a.ts", "aa"), Buffer.alloc(1024)]));
    expect(listing).toEqual({ files: ["a.ts"], unpackedBytes: 2, skipped: [] });
  });

  it("keeps this thread free while a bomb is read", async () => {
    const bomb = await gzipOfZeros(256 * 1024 * 1024);
    let ticks = 0;
    let longest = 0;
    let last = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      longest = Math.max(longest, now - last);
      last = now;
      ticks += 1;
    }, 5);
    try {
      const error = await rejection(inspectArchive(bomb, { limits: { maxUnpackedBytes: 64 * 1024 * 1024, maxOverheadBytes: 0 } }));
      expect(error.code).toBe("archive_too_large");
    } finally {
      clearInterval(timer);
    }
    // Figures, not a bar: the thread ticked all along (a synchronous inflate would show one long gap).
    console.log(`timer ticks while reading: ${ticks}, longest gap ${Math.round(longest)} ms`);
    expect(ticks).toBeGreaterThan(1);
    expect(longest).toBeLessThan(1000);
  });

  describe("from a file", () => {
    let dir: string;
    beforeEach(() => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), "wy-archive-file-"));
    });
    afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

    it("inspects and extracts an archive held in a file", async () => {
      const file = path.join(dir, "upload.tar.gz");
      fs.writeFileSync(file, tarGz([tarEntry("src/index.ts", "export default 1;\n"), tarEntry("l", "", { type: "2", linkname: "x" })]));
      expect(await inspectArchiveFile(file)).toEqual({ files: ["src/index.ts"], unpackedBytes: 18, skipped: ["l (SymbolicLink)"] });
      const out = path.join(dir, "out");
      fs.mkdirSync(out);
      await extractArchiveFile(file, out);
      expect(fs.readFileSync(path.join(out, "src/index.ts"), "utf8")).toBe("export default 1;\n");
    });

    it("refuses a bomb held in a file", async () => {
      const file = path.join(dir, "bomb.tar.gz");
      fs.writeFileSync(file, await gzipOfZeros(16 * 1024 * 1024));
      const error = await rejection(inspectArchiveFile(file, { limits: small }));
      expect(error.code).toBe("archive_too_large");
    });
  });
});
