/**
 * A worker's fetch through the egress gateway against the same fetch made directly, to an allowed
 * HTTP server on loopback answering `{"ok":true}`, at 1 and 16 concurrent requests (target: p50
 * within 0.5 ms of direct). Each side runs in a process of its own, as a worker would; rounds
 * alternate so both see the same machine. A third side is the floor of any proxy here: a bare
 * node:http forward proxy (in a process of its own, keep-alive both ways, nothing checked).
 *
 *   npx tsx bench/egress.ts [--seconds 3] [--rounds 3]
 */
import { execFile } from "node:child_process";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { createEgressGateway } from "../packages/server/src/egress/gateway.js";
import { createEgressPolicy } from "../packages/server/src/egress/policy.js";
import { createLogger } from "../packages/server/src/log.js";
import { spawn } from "node:child_process";
import { header, type Stats } from "./lib.js";

/** A small server in a process of its own, printing its port. */
async function serverProcess(script: string, args: string[] = []): Promise<{ url: string; stop(): Promise<void> }> {
  const child = spawn(process.execPath, ["-e", script, "--", ...args], { stdio: ["ignore", "pipe", "inherit"], env: {} });
  const port = await new Promise<string>((resolve) => child.stdout.once("data", (chunk: Buffer) => resolve(chunk.toString().trim())));
  return { url: `http://127.0.0.1:${port}`, stop: async () => void child.kill() };
}

const separateUpstream = () =>
  serverProcess(`const http = require("node:http");
const s = http.createServer((req, res) => { req.resume(); req.on("end", () => { res.setHeader("content-type", "application/json"); res.end('{"ok":true}'); }); });
s.keepAliveTimeout = 60000;
s.listen(0, "127.0.0.1", () => process.stdout.write(String(s.address().port) + "\\n"));`);

/** The floor: a forward proxy that only forwards, to the one upstream. */
const bareProxy = (upstreamPort: number) =>
  serverProcess(
    `const http = require("node:http");
const port = Number(process.argv.at(-1));
const agent = new http.Agent({ keepAlive: true, maxFreeSockets: 16 });
const s = http.createServer((req, res) => {
  const up = http.request({ host: "127.0.0.1", port, method: req.method, path: new URL(req.url, "http://x").pathname, headers: req.headers, agent }, (r) => { res.writeHead(r.statusCode, r.headers); r.pipe(res); });
  req.pipe(up);
});
s.keepAliveTimeout = 60000;
s.listen(0, "127.0.0.1", () => process.stdout.write(String(s.address().port) + "\\n"));`,
    [String(upstreamPort)],
  );

const { values } = parseArgs({ options: { seconds: { type: "string", default: "3" }, rounds: { type: "string", default: "3" } } });
const here = path.dirname(fileURLToPath(import.meta.url));
const clientModule = path.resolve(here, "../packages/server/dist/egress/client.js");
const undiciDir = path.dirname(createRequire(import.meta.url).resolve("undici/package.json"));

// The upstream in a process of its own, so the gateway (here, as in the server) does not share a
// thread with it.
const upstream = await separateUpstream();
const port = Number(new URL(upstream.url).port);
const gateway = createEgressGateway({
  policy: createEgressPolicy({ allow: [`127.0.0.1:${port}`], deny: [] }),
  log: createLogger({ level: "warn", stream: process.stderr }),
});
const socketPath = path.join(os.tmpdir(), `wy-bench-egress-${process.pid}.sock`);
await gateway.listen(socketPath, { identity: { workspaceId: "bench", purpose: "run" } });

const floor = await bareProxy(port);

function side(concurrency: number, how: "direct" | "gateway" | "bare proxy"): Promise<Stats> {
  const target = how === "bare proxy" ? `${floor.url}/` : `${upstream.url}/`;
  const args = [path.join(here, "egress-fetch.mjs"), target, String(concurrency), String(Number(values.seconds) * 1000)];
  if (how === "gateway") args.push(socketPath, clientModule, undiciDir);
  return new Promise((resolve, reject) =>
    execFile(process.execPath, args, { env: {} }, (error, stdout) => (error ? reject(error) : resolve({ ...JSON.parse(stdout), samples: undefined }))),
  );
}

header("fetch from a worker's process: direct vs through the egress gateway");
for (const concurrency of [1, 16]) {
  const direct: Stats[] = [];
  const routed: Stats[] = [];
  const bare: Stats[] = [];
  for (let round = 0; round < Number(values.rounds); round++) {
    direct.push(await side(concurrency, "direct"));
    routed.push(await side(concurrency, "gateway"));
    bare.push(await side(concurrency, "bare proxy"));
  }
  const median = (xs: Stats[], key: "p50" | "p99" | "throughput") => [...xs].map((s) => s[key]).sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const line = (name: string, xs: Stats[]) =>
    `${name.padEnd(22)} p50 ${(median(xs, "p50") * 1000).toFixed(0)} µs  p99 ${(median(xs, "p99") * 1000).toFixed(0)} µs  ${median(xs, "throughput").toFixed(0)} req/s`;
  console.log(`concurrency ${concurrency}`);
  console.log(`  ${line("direct", direct)}`);
  console.log(`  ${line("through the gateway", routed)}`);
  console.log(`  ${line("bare forward proxy", bare)}`);
  console.log(`  p50 difference: gateway +${((median(routed, "p50") - median(direct, "p50")) * 1000).toFixed(0)} µs (target at most +500 µs); bare proxy +${((median(bare, "p50") - median(direct, "p50")) * 1000).toFixed(0)} µs`);
}

await gateway.close();
await upstream.stop();
await floor.stop();
