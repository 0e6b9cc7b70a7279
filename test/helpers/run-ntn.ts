import { spawn } from "node:child_process";
import { Readable } from "node:stream";
import { expect } from "vitest";
import { OFFLINE_NPM_ENV } from "./fixture-worker.js";
import { OFFICIAL_NTN, OUR_NTN } from "./paths.js";

export interface NtnResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface NtnOptions {
  cwd: string;
  env: Record<string, string | undefined>;
  input?: string;
  timeoutMs?: number;
}

/**
 * The environment both CLIs run with: nothing of the developer's own (no real config dirs or
 * tokens), just PATH and HOME plus what the test passes.
 */
export function baseEnv(home: string): Record<string, string> {
  return {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: home,
    XDG_CONFIG_HOME: `${home}/.config`,
    XDG_DATA_HOME: `${home}/.local/share`,
    NOTION_HOME: `${home}/.notion`,
    NOTION_KEYRING: "0",
    NO_COLOR: "1",
    LANG: "C.UTF-8",
    // npm, when a CLI runs it (`workers new`), installs from the suite's warm cache.
    ...OFFLINE_NPM_ENV,
  };
}

function runBinary(command: string, args: string[], argv: string[], options: NtnOptions): Promise<NtnResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, [...args, ...argv], {
      cwd: options.cwd,
      env: Object.fromEntries(Object.entries(options.env).filter(([, v]) => v !== undefined)) as Record<string, string>,
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`ntn ${argv.join(" ")} timed out.\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, options.timeoutMs ?? 60_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    // A fast binary (the official ntn) may exit before reading stdin: EPIPE there is not a failure.
    child.stdin.on("error", () => {});
    child.stdin.end(options.input ?? "");
  });
}

/**
 * Our ntn, built, in a process of its own: for the end-to-end cases (exit codes and streams as a
 * shell sees them, the acceptance story, the comparisons with the official CLI, a command run
 * beside a server as another process).
 */
export function ntnBinary(argv: string[], options: NtnOptions): Promise<NtnResult> {
  return runBinary(process.execPath, [OUR_NTN], argv, options);
}

/**
 * Our ntn in this process, through the CLI's `run()` with captured output, as wrangler's tests
 * do: the same commands, parser and HTTP client without a Node start per call (~0.1 s of CPU
 * each). Where a test uses the CLI as a tool (deploy, env set, list), this is the one.
 */
export async function ntn(argv: string[], options: NtnOptions): Promise<NtnResult> {
  const { run } = await import("../../packages/cli/src/main.js");
  let stdout = "";
  let stderr = "";
  const stdin = Readable.from([options.input ?? ""]);
  const running = run({
    argv,
    cwd: options.cwd,
    env: Object.fromEntries(Object.entries(options.env).filter(([, v]) => v !== undefined)),
    stdout: { write: (chunk: string) => ((stdout += chunk), true) },
    stderr: { write: (chunk: string) => ((stderr += chunk), true) },
    stdin,
  });
  // As the spawned binary's timeout: a call that hangs fails with what it printed, not vitest's bare timeout.
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`ntn ${argv.join(" ")} timed out.\nstdout: ${stdout}\nstderr: ${stderr}`)), options.timeoutMs ?? 60_000);
  });
  try {
    const code = await Promise.race([running, timedOut]);
    return { code, stdout, stderr };
  } finally {
    clearTimeout(timer);
  }
}

/** The official ntn 0.4.0. */
export function officialNtn(argv: string[], options: NtnOptions): Promise<NtnResult> {
  return runBinary(OFFICIAL_NTN, [], argv, options);
}

/** Asserts a CLI call exited 0, showing its output otherwise. */
export function ok(result: NtnResult): NtnResult {
  expect(result.code, `exit ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`).toBe(0);
  return result;
}

/** Asserts a CLI call failed with this exit code (5: the server refused), showing its output otherwise. */
export function failed(result: NtnResult, code = 5): NtnResult {
  expect(result.code, `exit ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`).toBe(code);
  return result;
}
