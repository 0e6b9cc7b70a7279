import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import {
  describeRunError,
  encodeMessage,
  LineDecoder,
  tidyStack,
  whyNotRunnable,
  type FromChild,
  type SerializedError,
  type ToChild,
} from "@workyard/server/executor-protocol";
import { expiryComments, parseEnvFile } from "./dotenv-file.js";
import { LocalError, UserError } from "./errors.js";
import type { Output } from "./output.js";

export interface LocalRunOptions {
  cwd: string;
  key: string;
  input: unknown;
  /** The .env file to load, or undefined for none. */
  dotenvFile: string | undefined;
  env: NodeJS.ProcessEnv;
  out: Output;
  /** -v: the worker's stack with its error (never frames of Workyard's own entry). */
  verbose: boolean;
}

/** The runtime's OAuth token variables: `OAUTH_<hex of the name>_ACCESS_TOKEN`. */
const TOKEN_VARIABLE = /^OAUTH_[0-9A-F]+_ACCESS_TOKEN$/;

/**
 * The server's worker-process entry: a local run goes through the same code as a run on the server.
 * Resolved when a local run starts, so loading the CLI resolves nothing; through require's
 * resolution, which every loader has (vitest's transform, for the in-process CLI, lacks
 * import.meta.resolve).
 */
function childEntry(): string {
  return createRequire(import.meta.url).resolve("@workyard/server/executor-child");
}

/** The shell's environment without the CLI's own NOTION_* settings, then the .env file on top. */
function localEnv(options: LocalRunOptions): { env: Record<string, string>; expiries: Map<string, Date> } {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(options.env)) {
    if (value !== undefined && !key.startsWith("NOTION_")) env[key] = value;
  }
  if (!options.dotenvFile) return { env, expiries: new Map() };
  let text: string;
  try {
    text = fs.readFileSync(options.dotenvFile, "utf8");
  } catch (error) {
    // A missing default .env is fine; a file named with --dotenv must exist.
    if ((error as NodeJS.ErrnoException).code === "ENOENT" && path.basename(options.dotenvFile) === ".env") {
      return { env, expiries: new Map() };
    }
    throw new LocalError(`Failed to read ${options.dotenvFile}`, { cause: error });
  }
  for (const line of parseEnvFile(text)) if (line.key !== undefined) env[line.key] = line.value!;
  return { env, expiries: expiryComments(text) };
}

async function bundle(cwd: string, entry: string, outfile: string): Promise<void> {
  // esbuild loads here, not with every ntn command.
  const { build } = await import("esbuild");
  try {
    await build({
      entryPoints: [entry],
      absWorkingDir: cwd,
      outfile,
      bundle: true,
      format: "esm",
      platform: "node",
      target: "node20",
      packages: "external",
      sourcemap: "inline",
      logLevel: "silent",
    });
  } catch (error) {
    const first = (error as { errors?: { text: string; location?: { file: string; line: number } }[] }).errors?.[0];
    const where = first?.location ? ` (${first.location.file}:${first.location.line})` : "";
    throw new UserError(`Could not bundle src/index.ts: ${first?.text ?? (error as Error).message}${where}`);
  }
}

/**
 * `exec --local`: bundles src/index.ts with esbuild (packages external, inline source map) into
 * node_modules/.cache/workyard and runs the capability in a child of the user's own Node, through
 * the same entry the server's sandbox uses (`default.run(key, input, { concreteOutput: true })`),
 * without the sandbox's limits. Worker output goes to stderr; the result is returned. No tsx needed.
 */
export async function runLocally(options: LocalRunOptions): Promise<unknown> {
  const { cwd, out } = options;
  const entry = path.join(cwd, "src", "index.ts");
  if (!fs.existsSync(entry)) {
    throw new UserError(`Could not find ${entry}`, { hint: "Make sure you are in a worker project directory." });
  }
  if (!fs.existsSync(path.join(cwd, "node_modules", "@notionhq", "workers"))) {
    throw new UserError("The project's dependencies are not installed (no node_modules/@notionhq/workers).", { hint: "Run `npm install`." });
  }
  const { env, expiries } = localEnv(options);
  const stale = [...expiries].filter(([key, at]) => TOKEN_VARIABLE.test(key) && at.getTime() <= Date.now());
  for (const [key, at] of stale) {
    out.warn(`${key} in ${path.basename(options.dotenvFile ?? ".env")} expired at ${at.toISOString()}.`, "Run `ntn workers env pull` for a fresh token.");
  }

  // Inside the project, so the bundle's bare imports resolve to its node_modules.
  const cacheDir = path.join(cwd, "node_modules", ".cache", "workyard");
  fs.mkdirSync(cacheDir, { recursive: true });
  const bundlePath = path.join(cacheDir, `exec-${process.pid}-${crypto.randomBytes(4).toString("hex")}.mjs`);
  try {
    await bundle(cwd, entry, bundlePath);
    const outcome = await runInChild(bundlePath, options.key, options.input, env, cwd, out);
    if (outcome.ok) return outcome.value;
    if ("refused" in outcome) throw new UserError(outcome.refused.message, { hint: outcome.refused.hint });
    const error = outcome.error;
    // As the server's exec says it; the worker's own stack with --verbose.
    if (options.verbose && error.stack) out.status(tidyStack(error.stack));
    const tokenTrouble = stale.length > 0 || /\b401\b|unauthori[sz]ed|invalid.token|expired|Missing OAuth access token/i.test(error.message);
    throw new UserError(describeRunError(error), {
      hint: tokenTrouble ? "If the provider rejected the token, run `ntn workers env pull --refresh` for a fresh one, then try again." : undefined,
    });
  } finally {
    fs.rmSync(bundlePath, { force: true });
  }
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: SerializedError } | { ok: false; refused: { message: string; hint: string } };

function runInChild(bundlePath: string, key: string, input: unknown, env: Record<string, string>, cwd: string, out: Output): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    // The server's channel: messages as JSON lines on the child's stdin and its descriptor 3. The
    // variables go in the first message, as the server sends them; the process gets them too.
    const child = spawn(process.execPath, [childEntry(), bundlePath, String(16 * 1024 * 1024), String(64 * 1024 * 1024)], {
      env,
      cwd,
      stdio: ["pipe", "pipe", "inherit", "pipe"],
    });
    const send = (message: ToChild) => child.stdin?.write(encodeMessage(message), () => {});
    child.stdin?.on("error", () => {});
    send({ type: "start", env });
    // Whatever bypasses the child's capture still belongs on stderr: stdout carries the result alone.
    child.stdout?.on("data", (chunk: Buffer) => out.stderr.write(chunk.toString("utf8")));
    let settled = false;
    const finish = (outcome: Outcome) => {
      if (settled) return;
      settled = true;
      child.kill();
      resolve(outcome);
    };
    const decoder = new LineDecoder<FromChild>(
      128 * 1024 * 1024,
      (message) => onMessage(message),
      (reason) => finish({ ok: false, error: { name: "ProtocolViolation", message: `The worker process wrote ${reason} on Workyard's channel.` } }),
    );
    (child.stdio[3] as NodeJS.ReadableStream | null)?.on("data", (chunk: Buffer) => decoder.push(chunk));
    const onMessage = (message: FromChild) => {
      switch (message.type) {
        case "log":
          out.stderr.write(message.data);
          break;
        case "ready": {
          // The same checks as the server's exec, on the manifest the worker reported.
          const manifest = message.manifest as { capabilities?: { _tag: string; key: string }[] } | null;
          const refused = whyNotRunnable(manifest?.capabilities ?? [], key);
          if (refused) finish({ ok: false, refused });
          else send({ type: "run", runId: "local", key, input, env: {} });
          break;
        }
        case "result":
          finish({ ok: true, value: message.value });
          break;
        case "error":
        case "crash":
        case "load_failed":
          finish({ ok: false, error: message.error });
          break;
      }
    };
    child.on("error", reject);
    child.on("exit", (code, signal) => finish({ ok: false, error: { name: "Exited", message: `The worker process exited (${signal ?? `code ${code}`}).` } }));
  });
}
