/**
 * The worker project every test builds on: test/fixtures/worker's package.json and its committed
 * lockfile (the SDK and the Notion client), installed once per lockfile by test/global-setup.ts
 * into a shared folder with a warm npm cache. Tests copy that cache into each server's data dir,
 * so no build, `npm ci` or `ntn workers new` of the suite asks the registry anything.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { treeHash } from "../../packages/server/src/builder/install.js";
import { ROOT } from "./paths.js";

export const FIXTURE_DIR = path.join(ROOT, "test/fixtures/worker");
export const FIXTURE_PACKAGE_JSON = fs.readFileSync(path.join(FIXTURE_DIR, "package.json"), "utf8");
export const FIXTURE_LOCKFILE = fs.readFileSync(path.join(FIXTURE_DIR, "package-lock.json"), "utf8");

/** The shared folder for this lockfile: `npm/` (the warm cache) and `worker/` (installed). */
export const FIXTURE_CACHE = path.join(
  ROOT,
  "node_modules/.cache/workyard-tests",
  crypto.createHash("sha256").update(FIXTURE_PACKAGE_JSON).update(FIXTURE_LOCKFILE).digest("hex").slice(0, 16),
);
export const TEST_NPM_CACHE = path.join(FIXTURE_CACHE, "npm");
/** The fixture installed: its node_modules, for `exec --local` in the tests' projects. */
export const FIXTURE_INSTALLED = path.join(FIXTURE_CACHE, "worker");

/** What npm needs to install from the warm cache: the tests' CLIs and npm runs set these. */
export const OFFLINE_NPM_ENV = { npm_config_cache: TEST_NPM_CACHE, npm_config_prefer_offline: "true" };

/**
 * Copies the warm cache into a data dir as its default workspace's npm cache (sandbox index 1),
 * before the server starts: its first build then installs without the registry. The server gives
 * the folder to the workspace's uid, as it does any cache it did not make.
 */
export function seedServerNpmCache(dataDir: string, owner?: { uid: number; gid: number }): void {
  if (!fs.existsSync(TEST_NPM_CACHE)) return;
  const cache = path.join(dataDir, "npm-cache", "1");
  // A server that is not root cannot take over a cache: it gets a copy that is its own already.
  copyCache(TEST_NPM_CACHE, cache, { linkContent: !owner, isContent: false });
  if (owner) {
    for (const dir of [path.join(dataDir, "npm-cache"), cache]) fs.chownSync(dir, owner.uid, owner.gid);
    for (const entry of fs.readdirSync(cache, { recursive: true, encoding: "utf8" })) fs.lchownSync(path.join(cache, entry), owner.uid, owner.gid);
  }
}

/**
 * Not _logs nor _cacache/tmp: npm runs the tests start with the shared cache (`workers new`) write
 * and prune files there while another test seeds a server from it.
 */
const SKIPPED_CACHE_ENTRIES = new Set(["_logs", "tmp"]);

/**
 * The cache's content files hard-linked (with `linkContent`), the rest (its index, which npm
 * appends to) copied: the 48 MB of packages were copied into each of the suite's ~100 servers
 * and deleted again, ~20 s of the forks' time. cacache never writes a content file in place (it is named by its hash, written
 * through a temporary file and renamed). A server giving its cache to its workspace's uid
 * (build-sandbox.ts, chownTree) gives it these shared files too: they end up owned by the first
 * workspace's uid, the same in every root server, still readable by all; builds install with
 * --ignore-scripts, so nothing but npm writes in a build's cache.
 */
function copyCache(source: string, target: string, how: { linkContent: boolean; isContent: boolean }): void {
  fs.mkdirSync(target, { recursive: true });
  for (const entry of fs.readdirSync(source, { withFileTypes: true })) {
    if (SKIPPED_CACHE_ENTRIES.has(entry.name)) continue;
    const from = path.join(source, entry.name);
    const to = path.join(target, entry.name);
    try {
      if (entry.isDirectory()) copyCache(from, to, { ...how, isContent: how.isContent || entry.name === "content-v2" });
      else if (how.isContent && how.linkContent) linkOrCopy(from, to);
      else fs.copyFileSync(from, to);
    } catch (error) {
      // npm renamed or pruned it meanwhile: a cache entry less, which npm tolerates.
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    }
  }
}

/**
 * The fixture's installed tree as a data dir's tree for the fixture's lockfile: `deps/<hash>` a
 * link to the folder global setup installed (marked complete there), so a server's first build of
 * a fixture project reuses it instead of running npm ci in its sandbox, 2-3 s for each of the
 * suite's sixty-odd servers. `registry` is the server's (it is part of the hash). Tests of the
 * install itself start their servers without it.
 */
export function seedInstalledFixture(dataDir: string, registry: string, owner?: { uid: number; gid: number }): void {
  if (!fs.existsSync(path.join(FIXTURE_INSTALLED, ".complete"))) return;
  const hash = treeHash({ packageJson: Buffer.from(FIXTURE_PACKAGE_JSON), lockfile: Buffer.from(FIXTURE_LOCKFILE) }, registry, "");
  const deps = path.join(dataDir, "deps");
  fs.mkdirSync(deps, { recursive: true });
  fs.symlinkSync(FIXTURE_INSTALLED, path.join(deps, hash), "dir");
  if (owner) {
    fs.chownSync(deps, owner.uid, owner.gid);
    fs.lchownSync(path.join(deps, hash), owner.uid, owner.gid);
  }
}

/**
 * A link where the data dir is on the cache's filesystem, else a copy; a file already there (a
 * server restarted on its data dir) is the same file, its name being its hash.
 */
function linkOrCopy(from: string, to: string): void {
  try {
    fs.linkSync(from, to);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EXDEV") fs.copyFileSync(from, to);
    else if (code !== "EEXIST") throw error;
  }
}

/** The registry a server started with this environment and no --npm-registry installs from. */
export const DEFAULT_REGISTRY = "https://registry.npmjs.org/";

/** package.json and the committed lockfile written into a project folder. */
export function writeFixturePackage(dir: string): void {
  fs.writeFileSync(path.join(dir, "package.json"), FIXTURE_PACKAGE_JSON);
  fs.writeFileSync(path.join(dir, "package-lock.json"), FIXTURE_LOCKFILE);
}

/**
 * A worker project `dir` with `source` as src/index.ts: the fixture's package files and tsconfig,
 * and node_modules linked to the installed fixture (for `exec --local`; deploys upload no
 * node_modules).
 */
export function fixtureProject(dir: string, source: string): string {
  fs.mkdirSync(path.join(dir, "src"), { recursive: true });
  writeFixturePackage(dir);
  fs.copyFileSync(path.join(FIXTURE_DIR, "tsconfig.json"), path.join(dir, "tsconfig.json"));
  fs.symlinkSync(path.join(FIXTURE_INSTALLED, "node_modules"), path.join(dir, "node_modules"), "dir");
  fs.writeFileSync(path.join(dir, "src", "index.ts"), source);
  return dir;
}
