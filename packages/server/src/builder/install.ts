import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { AppError } from "../errors.js";

/** The files that decide an installed tree; nothing else of the project reaches npm. */
export interface InstallInput {
  packageJson: Buffer;
  lockfile: Buffer | undefined;
  npmrc: Buffer | undefined;
}

export function readInstallInput(projectDir: string): InstallInput {
  const read = (name: string) => {
    try {
      return fs.readFileSync(path.join(projectDir, name));
    } catch {
      return undefined;
    }
  };
  const packageJson = read("package.json");
  if (!packageJson) {
    throw new AppError("build_failed", "The project has no package.json.", {
      hint: "A worker project needs package.json with @notionhq/workers; `ntn workers new` makes one.",
    });
  }
  return { packageJson, lockfile: read("package-lock.json"), npmrc: read(".npmrc") };
}

/**
 * Installed trees are shared by this hash: the lockfile (or package.json where there is none), the
 * project's .npmrc and Node's major version. An unchanged lockfile installs nothing.
 */
export function lockfileHash(input: InstallInput): string {
  const hash = crypto.createHash("sha256");
  hash.update(`workyard deps v1\0node${process.versions.node.split(".")[0]}\0`);
  hash.update(input.lockfile ? "lock\0" : "nolock\0");
  hash.update(input.lockfile ?? input.packageJson);
  hash.update("\0");
  hash.update(input.npmrc ?? "");
  return hash.digest("hex").slice(0, 32);
}

const inFlight = new Map<string, Promise<string>>();

/**
 * `<depsRoot>/<hash>/node_modules`, installed once: `npm ci --ignore-scripts` from the lockfile
 * (`npm install --ignore-scripts` without one), with the npm cache under the data dir. Installs
 * into a temporary folder and renames it into place, so a crash or a concurrent install by another
 * process never leaves a half tree under the final name. Returns the real path of node_modules.
 */
export async function ensureInstalled(options: {
  depsRoot: string;
  cacheDir: string;
  input: InstallInput;
  onLog(stream: "stdout" | "stderr", line: string): void;
}): Promise<{ nodeModules: string; installed: boolean; hash: string }> {
  const hash = lockfileHash(options.input);
  const finalDir = path.join(options.depsRoot, hash);
  const nodeModules = path.join(finalDir, "node_modules");
  if (fs.existsSync(path.join(finalDir, ".complete"))) return { nodeModules: fs.realpathSync(nodeModules), installed: false, hash };
  let pending = inFlight.get(hash);
  if (!pending) {
    pending = install(options, finalDir).finally(() => inFlight.delete(hash));
    inFlight.set(hash, pending);
  }
  return { nodeModules: await pending, installed: true, hash };
}

async function install(
  options: { depsRoot: string; cacheDir: string; input: InstallInput; onLog(stream: "stdout" | "stderr", line: string): void },
  finalDir: string,
): Promise<string> {
  fs.mkdirSync(options.depsRoot, { recursive: true, mode: 0o755 });
  fs.mkdirSync(options.cacheDir, { recursive: true, mode: 0o700 });
  const work = fs.mkdtempSync(`${finalDir}.tmp-`);
  try {
    fs.writeFileSync(path.join(work, "package.json"), options.input.packageJson);
    if (options.input.lockfile) fs.writeFileSync(path.join(work, "package-lock.json"), options.input.lockfile);
    if (options.input.npmrc) fs.writeFileSync(path.join(work, ".npmrc"), options.input.npmrc);
    const args = [
      options.input.lockfile ? "ci" : "install",
      "--ignore-scripts",
      "--no-audit",
      "--no-fund",
      "--prefer-offline",
      "--loglevel=warn",
      `--cache=${options.cacheDir}`,
    ];
    options.onLog("stdout", `npm ${args.join(" ")}`);
    const code = await runNpm(args, work, options.onLog);
    if (code !== 0) {
      throw new AppError("build_failed", `Installing dependencies failed (npm exited with code ${code}).`, {
        hint: "The build log shows npm's error. Check package.json and package-lock.json (`npm install` locally updates the lockfile).",
      });
    }
    fs.mkdirSync(path.join(work, "node_modules"), { recursive: true });
    fs.chmodSync(work, 0o755);
    fs.writeFileSync(path.join(work, ".complete"), new Date().toISOString());
    try {
      fs.renameSync(work, finalDir);
    } catch (error) {
      // Another process installed the same tree first: use theirs.
      if (!fs.existsSync(path.join(finalDir, ".complete"))) throw error;
      fs.rmSync(work, { recursive: true, force: true });
    }
    return fs.realpathSync(path.join(finalDir, "node_modules"));
  } catch (error) {
    fs.rmSync(work, { recursive: true, force: true });
    throw error;
  }
}

function runNpm(args: string[], cwd: string, onLog: (stream: "stdout" | "stderr", line: string) => void): Promise<number> {
  return new Promise((resolve) => {
    // The server's own npm settings (npm_* variables, when it was started by `npm start`) stay out.
    const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !/^npm_/i.test(key)));
    const child = spawn("npm", args, {
      cwd,
      env: { ...env, npm_config_update_notifier: "false", NODE_OPTIONS: "" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const forward = (stream: "stdout" | "stderr") => {
      let rest = "";
      return (chunk: Buffer) => {
        const lines = (rest + chunk.toString("utf8")).split("\n");
        rest = lines.pop() ?? "";
        for (const line of lines) if (line.trim() && !/Unknown (user|env) config "nodedir"/.test(line)) onLog(stream, line);
      };
    };
    child.stdout.on("data", forward("stdout"));
    child.stderr.on("data", forward("stderr"));
    const timer = setTimeout(() => child.kill("SIGKILL"), 10 * 60 * 1000);
    child.on("error", (error) => {
      clearTimeout(timer);
      onLog("stderr", `Could not run npm: ${error.message}`);
      resolve(127);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve(code ?? 1);
    });
  });
}
