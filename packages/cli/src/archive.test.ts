import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import zlib from "node:zlib";
import { Parser, type ReadEntry } from "tar";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { extractArchive, inspectArchive } from "../../server/src/builder/archive.js";
import { isExcludedDir, isExcludedFile, listSourceFiles, packSource } from "./archive.js";
import { EXIT, LocalError } from "./errors.js";

let tmp: string;
let root: string;
beforeEach(() => {
  tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), "wy-pack-")));
  root = path.join(tmp, "project");
  fs.mkdirSync(root);
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

function write(relative: string, content = `// ${relative}\n`, base = root): void {
  const file = path.join(base, relative);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, content);
}

const sorted = (list: string[]) => [...list].sort();

describe("listSourceFiles", () => {
  it("leaves out node_modules, dist and dot-directories at any depth", () => {
    for (const file of [
      "package.json",
      "src/index.ts",
      "node_modules/dep/index.js",
      "dist/index.js",
      ".git/HEAD",
      ".github/workflows/ci.yml",
      ".dev-shell/state",
      "src/node_modules/nested/index.js",
      "src/dist/out.js",
      "src/.cache/blob",
      "packages/a/dist/x.js",
      "packages/a/node_modules/y/z.js",
      "packages/a/src/a.ts",
      "distribution/kept.ts",
      "my_node_modules/kept.ts",
    ]) {
      write(file);
    }
    expect(sorted(listSourceFiles(root))).toEqual([
      "distribution/kept.ts",
      "my_node_modules/kept.ts",
      "package.json",
      "packages/a/src/a.ts",
      "src/index.ts",
    ]);
  });

  it("leaves out .env, .env.*, workers.json and workers.*.json at any depth, and keeps other hidden files", () => {
    for (const file of [
      ".env",
      ".env.local",
      ".env.production",
      "workers.json",
      "workers.dev.json",
      "sub/.env",
      "sub/.env.test",
      "sub/deeper/workers.json",
      "sub/deeper/workers.staging.json",
      ".npmrc",
      ".gitignore",
      ".envrc",
      "sub/.nvmrc",
      "env.ts",
      "workers.jsonc",
      "workers.ts",
      "my-workers.json",
      "sub/workers.json.bak",
      "src/index.ts",
    ]) {
      write(file);
    }
    expect(sorted(listSourceFiles(root))).toEqual(
      sorted([".envrc", ".gitignore", ".npmrc", "env.ts", "my-workers.json", "src/index.ts", "sub/.nvmrc", "sub/workers.json.bak", "workers.jsonc", "workers.ts"]),
    );
  });

  it("names the exclusion rules as the official CLI does", () => {
    expect(["node_modules", "dist", ".git", ".x"].every(isExcludedDir)).toBe(true);
    expect(["src", "distx", "lib"].some(isExcludedDir)).toBe(false);
    expect([".env", ".env.local", "workers.json", "workers.prod.json"].every(isExcludedFile)).toBe(true);
    expect([".envrc", "workers.json5", "workers..json.x", ".npmrc"].some(isExcludedFile)).toBe(false);
  });

  it("follows symlinked files and directories, also when they point outside the project", () => {
    write("src/index.ts");
    write("shared/lib.ts", "export const shared = 1;\n", tmp);
    write("shared/deep/more.ts", "export const more = 2;\n", tmp);
    write("outside.ts", "export const outside = 3;\n", tmp);
    fs.symlinkSync(path.join(tmp, "outside.ts"), path.join(root, "src/linked.ts"));
    fs.symlinkSync(path.join(tmp, "shared"), path.join(root, "src/shared"));
    fs.symlinkSync("index.ts", path.join(root, "src/relative-link.ts"));
    expect(sorted(listSourceFiles(root))).toEqual([
      "src/index.ts",
      "src/linked.ts",
      "src/relative-link.ts",
      "src/shared/deep/more.ts",
      "src/shared/lib.ts",
    ]);
  });

  it("applies the exclusions to a symlink's own name", () => {
    write("real/secrets.env", "A=1\n", tmp);
    fs.symlinkSync(path.join(tmp, "real/secrets.env"), path.join(root, ".env"));
    fs.symlinkSync(path.join(tmp, "real"), path.join(root, "node_modules"));
    write("src/index.ts");
    expect(listSourceFiles(root)).toEqual(["src/index.ts"]);
  });

  it("does not loop on a symlink to a parent directory", () => {
    write("src/index.ts");
    fs.symlinkSync("..", path.join(root, "src/up"));
    fs.symlinkSync(".", path.join(root, "self"));
    expect(sorted(listSourceFiles(root))).toEqual(["src/index.ts"]);
  });

  it("fails with a LocalError (exit 1) naming a broken symlink", () => {
    write("src/index.ts");
    fs.symlinkSync(path.join(tmp, "does-not-exist.ts"), path.join(root, "src/broken.ts"));
    let error: unknown;
    try {
      listSourceFiles(root);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(LocalError);
    expect((error as LocalError).exitCode).toBe(EXIT.local);
    expect((error as LocalError).exitCode).toBe(1);
    expect((error as LocalError).message).toContain("src/broken.ts");
    expect((error as LocalError).hint).toMatch(/broken link/);
  });
});

/** Every entry of a .tar.gz as the tar package reads it. */
async function entriesOf(archive: Buffer): Promise<{ path: string; type: string; mode: number; body: Buffer; uname?: string }[]> {
  const out: { path: string; type: string; mode: number; body: Buffer; uname?: string }[] = [];
  await new Promise<void>((resolve, reject) => {
    const parser = new Parser({
      strict: true,
      onReadEntry(entry: ReadEntry) {
        const chunks: Buffer[] = [];
        entry.on("data", (c: Buffer) => chunks.push(c));
        entry.on("end", () => out.push({ path: entry.path, type: entry.type, mode: entry.mode ?? 0, body: Buffer.concat(chunks), uname: entry.uname }));
      },
    });
    parser.on("error", reject);
    parser.on("end", () => resolve());
    parser.end(archive);
  });
  return out;
}

describe("packSource", () => {
  it("packs a gzip tar of file entries only, which the server accepts and lists", async () => {
    write("package.json", '{"name":"w","type":"module"}\n');
    write("package-lock.json", "{}\n");
    write("src/index.ts", "export default 1;\n");
    write("src/lib/deep/util.ts", "export const x = 2;\n");
    write(".npmrc", "registry=https://registry.npmjs.org/\n");
    write(".env", "SECRET=canary-pack-secret\n");
    write("node_modules/dep/index.js");
    write("dist/index.js");
    write("outside.ts", "export const outside = 3;\n", tmp);
    fs.symlinkSync(path.join(tmp, "outside.ts"), path.join(root, "src/linked.ts"));
    write("script.sh", "#!/bin/sh\necho hi\n");
    fs.chmodSync(path.join(root, "script.sh"), 0o755);

    const { archive, files } = await packSource(root);
    expect(archive.subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b]));
    expect(() => zlib.gunzipSync(archive)).not.toThrow();
    expect(zlib.gunzipSync(archive).includes(Buffer.from("canary-pack-secret"))).toBe(false);

    const expected = [".npmrc", "package-lock.json", "package.json", "script.sh", "src/index.ts", "src/lib/deep/util.ts", "src/linked.ts"];
    expect(sorted(files)).toEqual(expected);

    const entries = await entriesOf(archive);
    expect(entries.map((e) => e.type)).toEqual(entries.map(() => "File"));
    expect(sorted(entries.map((e) => e.path))).toEqual(expected);
    const byPath = new Map(entries.map((e) => [e.path, e]));
    expect(byPath.get("src/linked.ts")!.body.toString()).toBe("export const outside = 3;\n");
    expect(byPath.get("src/index.ts")!.body.toString()).toBe("export default 1;\n");
    expect(byPath.get("script.sh")!.mode & 0o111).not.toBe(0);
    expect(byPath.get("src/index.ts")!.mode & 0o111).toBe(0);
    expect(entries.every((e) => !e.uname)).toBe(true);

    const listing = await inspectArchive(archive);
    expect(sorted(listing.files)).toEqual(expected);
    expect(listing.skipped).toEqual([]);

    const out = path.join(tmp, "unpacked");
    fs.mkdirSync(out);
    await extractArchive(archive, out);
    for (const file of expected) {
      const original = fs.readFileSync(path.join(root, file));
      expect(fs.readFileSync(path.join(out, file)).equals(original)).toBe(true);
    }
  });

  it("packs a project with a single file", async () => {
    write("index.ts", "x");
    const { archive, files } = await packSource(root);
    expect(files).toEqual(["index.ts"]);
    expect((await inspectArchive(archive)).files).toEqual(["index.ts"]);
  });
});
