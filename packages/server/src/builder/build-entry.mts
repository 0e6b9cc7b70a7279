/**
 * The entry of an install's sandboxed process (builder/build-sandbox.ts starts it): installs the
 * project's dependencies with npm, inside namespaces where the only files are the project, its
 * npm cache, the output folder and the tools themselves, and the only way out is the egress
 * gateway's socket, which lets npm reach the registry and nothing else. It runs as the
 * workspace's own uid (as root) and gets no variable of the server's.
 *
 * The job comes as JSON in argv[2]. Progress goes to stdout/stderr line by line (the build log);
 * the outcome to <out>/result.json. It imports nothing but Node's own modules.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";

export interface BuildJob {
  /** The project folder (writable): package.json, the lockfile, src/. */
  project: string;
  /** Where result.json goes. */
  out: string;
  /** `npm ci` with a lockfile, `npm install` without one. */
  lockfile: boolean;
  registry: string;
  npmCli: string;
  npmCache: string;
  /** The egress gateway's socket: npm's proxy. */
  egressSocket: string;
  home: string;
}

export interface BuildResult {
  ok: boolean;
  error?: string;
  hint?: string;
}

const job = JSON.parse(process.argv[2] ?? "{}") as BuildJob;

function finish(result: BuildResult): never {
  fs.writeFileSync(path.join(job.out, "result.json"), JSON.stringify(result));
  process.exit(result.ok ? 0 : 1);
}

/** npm speaks to proxies over TCP: a listener on the sandbox's loopback, piped to the gateway. */
function startRelay(socketPath: string): Promise<number> {
  const server = net.createServer((client) => {
    const upstream = net.connect(socketPath);
    client.pipe(upstream).pipe(client);
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", close);
    upstream.on("error", close);
  });
  server.unref();
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port));
  });
}

function forwardLines(stream: NodeJS.ReadableStream, to: NodeJS.WriteStream): void {
  let rest = "";
  stream.on("data", (chunk: Buffer) => {
    const lines = (rest + chunk.toString("utf8")).split("\n");
    rest = lines.pop() ?? "";
    for (const line of lines) if (line.trim()) to.write(`${line}\n`);
  });
  stream.on("end", () => {
    if (rest.trim()) to.write(`${rest}\n`);
  });
}

async function install(): Promise<void> {
  const port = await startRelay(job.egressSocket);
  const proxy = `http://127.0.0.1:${port}/`;
  // The project's own .npmrc was removed before the sandbox started; this is the whole config.
  const userconfig = path.join(job.home, ".npmrc");
  fs.writeFileSync(
    userconfig,
    [
      `registry=${job.registry}`,
      `proxy=${proxy}`,
      `https-proxy=${proxy}`,
      "noproxy=",
      `cache=${job.npmCache}`,
      "ignore-scripts=true",
      "audit=false",
      "fund=false",
      "update-notifier=false",
      "",
    ].join("\n"),
  );
  const globalconfig = path.join(job.home, "npmrc-global");
  fs.writeFileSync(globalconfig, "");
  const args = [job.npmCli, job.lockfile ? "ci" : "install", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=warn"];
  process.stdout.write(`npm ${args.slice(1).join(" ")}\n`);
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: job.home,
    TMPDIR: process.env.TMPDIR ?? "/tmp",
    npm_config_userconfig: userconfig,
    npm_config_globalconfig: globalconfig,
  };
  if (process.env.NODE_EXTRA_CA_CERTS) env.NODE_EXTRA_CA_CERTS = process.env.NODE_EXTRA_CA_CERTS;
  const code = await new Promise<number>((resolve) => {
    const child = spawn(process.execPath, args, { cwd: job.project, env, stdio: ["ignore", "pipe", "pipe"] });
    forwardLines(child.stdout, process.stdout);
    forwardLines(child.stderr, process.stderr);
    child.on("error", (error) => {
      process.stderr.write(`Could not run npm: ${error.message}\n`);
      resolve(127);
    });
    child.on("close", (exit) => resolve(exit ?? 1));
  });
  if (code !== 0) {
    finish({
      ok: false,
      error: `Installing dependencies failed (npm exited with code ${code}).`,
      hint: "The build log shows npm's error. Check package.json and package-lock.json (`npm install` locally updates the lockfile).",
    });
  }
  fs.mkdirSync(path.join(job.project, "node_modules"), { recursive: true });
}

try {
  await install();
  finish({ ok: true });
} catch (error) {
  process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
  finish({ ok: false, error: `The build failed: ${(error as Error).message}` });
}
