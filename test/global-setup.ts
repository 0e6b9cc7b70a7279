/**
 * Once per `vitest run`: the fixture worker installed and npm's cache warm for its lockfile
 * (test/helpers/fixture-worker.ts). The first run on a machine fetches the packages; later runs
 * find them and return at once. What the tests then install comes from this cache.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { FIXTURE_CACHE, FIXTURE_INSTALLED, TEST_NPM_CACHE, writeFixturePackage, FIXTURE_PACKAGE_JSON } from "./helpers/fixture-worker.js";

function npm(args: string[], cwd: string): void {
  const result = spawnSync("npm", [...args, "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline", `--cache=${TEST_NPM_CACHE}`, "--loglevel=error"], {
    cwd,
    encoding: "utf8",
  });
  if (result.status !== 0) throw new Error(`npm ${args.join(" ")} failed in ${cwd}:\n${result.stderr}`);
}

export default function setup(): void {
  const done = path.join(FIXTURE_CACHE, "ready");
  if (fs.existsSync(done)) return markInstalled();
  fs.mkdirSync(FIXTURE_INSTALLED, { recursive: true });
  writeFixturePackage(FIXTURE_INSTALLED);
  // Tarballs, from the lockfile.
  npm(["ci"], FIXTURE_INSTALLED);
  // Package documents too, for the few tests that install without a lockfile on purpose.
  const resolve = fs.mkdtempSync(path.join(os.tmpdir(), "wy-resolve-"));
  try {
    fs.writeFileSync(path.join(resolve, "package.json"), FIXTURE_PACKAGE_JSON);
    npm(["install", "--package-lock-only"], resolve);
  } finally {
    fs.rmSync(resolve, { recursive: true, force: true });
  }
  markInstalled();
  fs.writeFileSync(done, `${new Date().toISOString()}\n`);
}

/** The installed fixture is a complete tree, as a server marks the trees it installs (seedInstalledFixture). */
function markInstalled(): void {
  fs.writeFileSync(path.join(FIXTURE_INSTALLED, ".complete"), "installed by test/global-setup.ts\n");
}
