/**
 * The README's first command, as written: `npm start -- --port 0 --data-dir D` from the
 * repository's root starts the platform (it once printed npm's banner and exited 0).
 */
import { spawn } from "node:child_process";
import path from "node:path";
import { expect, it } from "vitest";
import { ROOT } from "../helpers/paths.js";
import { tempDir } from "../helpers/tmp.js";

it("`npm start -- --port 0 --data-dir D` from the repository's root listens, and stops on SIGTERM", async () => {
  const tmp = tempDir("wy-npm-start-");
  try {
    const home = path.join(tmp.dir, "home");
    const child = spawn("npm", ["start", "--", "--port", "0", "--data-dir", path.join(tmp.dir, "data")], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? "/usr/bin", HOME: home, XDG_CONFIG_HOME: path.join(home, ".config") },
      stdio: ["ignore", "pipe", "pipe"],
      // A group of its own: npm and the server it starts are stopped together, as by a terminal.
      detached: true,
    });
    let output = "";
    child.stdout.on("data", (c: Buffer) => (output += c.toString()));
    child.stderr.on("data", (c: Buffer) => (output += c.toString()));
    const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no "Listening on" within 60 s:\n${output}`)), 60_000);
      child.stdout.on("data", () => {
        const match = /^Listening on (http:\/\/127\.0\.0\.1:\d+)$/m.exec(output);
        if (match) {
          clearTimeout(timer);
          resolve(match[1]!);
        }
      });
      void exited.then((code) => reject(new Error(`npm start exited (${code}) before listening:\n${output}`)));
    });
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    // npm runs the server as its child: signal the whole group, as a terminal's Ctrl-C would.
    process.kill(-child.pid!, "SIGTERM");
    await exited;
    // The server itself is gone too (its port no longer answers).
    await new Promise((r) => setTimeout(r, 500));
    await expect(fetch(`${url}/healthz`)).rejects.toThrow();
  } finally {
    tmp.cleanup();
  }
});

it("`npx ntn` in the repository runs ours: npm links node_modules/.bin/ntn to a file the repository holds", async () => {
  const { execFileSync } = await import("node:child_process");
  const fs = await import("node:fs");
  const link = path.join(ROOT, "node_modules", ".bin", "ntn");
  // The link's target is committed (not built), so npm can link it before `prepare` builds dist/.
  expect(fs.realpathSync(link)).toBe(path.join(ROOT, "packages", "cli", "bin", "ntn.js"));
  expect(execFileSync("git", ["ls-files", "packages/cli/bin/ntn.js"], { cwd: ROOT }).toString().trim()).toBe("packages/cli/bin/ntn.js");
  const version = execFileSync("npx", ["--no-install", "ntn", "--version"], { cwd: ROOT, env: { PATH: process.env.PATH ?? "/usr/bin", HOME: "/nonexistent" } }).toString();
  expect(version).toMatch(/^ntn \d+\.\d+\.\d+ \(workyard\)$/m);
});
