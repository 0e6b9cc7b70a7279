import { execFile, execFileSync } from "node:child_process";
import fs from "node:fs";
import http, { type IncomingHttpHeaders } from "node:http";
import https from "node:https";
import net, { type AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { createRequire } from "node:module";
import { build } from "esbuild";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../log.js";
import { createEgressGateway, DENIED_HEADER, ERROR_HEADER, type EgressGateway } from "./gateway.js";
import { createEgressPolicy, type EgressLookup } from "./policy.js";

// End to end, without a sandbox: a child node process loads the client as the sandbox entry
// would (bundled by esbuild), routes through a gateway in this process, and reaches upstreams on
// 127.0.0.1 by a name only the gateway can resolve (upstream.test). The child's own DNS is cut
// off, so anything that did not go through the gateway fails.

const here = path.dirname(fileURLToPath(import.meta.url));
const run = promisify(execFile);

let dir: string;
let gateway: EgressGateway;
let socketPath: string;
let clientBundle: string;
const stops: (() => Promise<void>)[] = [];
const seen: { url: string; headers: IncomingHttpHeaders; body: string }[] = [];
const ports = { http: 0, https: 0, unlisted: 0, closed: 0 };
let unlistedConnections = 0;

/** A CA and a leaf for upstream.test; only the gateway is told about the CA. */
function makeCertificates(): { caFile: string; key: string; cert: string } {
  const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  fs.writeFileSync(path.join(dir, "leaf.ext"), "subjectAltName=DNS:upstream.test\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n");
  openssl("req", "-x509", ...ec, "-days", "2", "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=Workyard client test CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"); // prettier-ignore
  openssl("req", ...ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=upstream.test");
  openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-out", "leaf.crt", "-extfile", "leaf.ext"); // prettier-ignore
  const read = (file: string) => fs.readFileSync(path.join(dir, file), "utf8");
  return { caFile: path.join(dir, "ca.crt"), key: read("leaf.key"), cert: read("leaf.crt") };
}

/** Records each request and answers `<method> <path> <body>` in two chunks. */
const echo: http.RequestListener = (req, res) => {
  let body = "";
  req.on("data", (chunk: Buffer) => (body += chunk.toString()));
  req.on("end", () => {
    seen.push({ url: req.url!, headers: req.headers, body });
    res.writeHead(200, { "content-type": "text/plain", "x-upstream": "yes" });
    res.write(`${req.method} `);
    setTimeout(() => res.end(`${req.url} ${body}`), 5);
  });
};

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  stops.push(
    () =>
      new Promise<void>((resolve) => {
        (server as http.Server).closeAllConnections?.();
        server.close(() => resolve());
      }),
  );
  return (server.address() as AddressInfo).port;
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "wy-egress-client-"));
  const certs = makeCertificates();
  ports.http = await listen(http.createServer(echo));
  ports.https = await listen(https.createServer({ key: certs.key, cert: certs.cert }, echo));
  ports.unlisted = await listen(net.createServer((socket) => (unlistedConnections += 1) && socket.destroy()));
  const closed = net.createServer();
  await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
  ports.closed = (closed.address() as AddressInfo).port;
  await new Promise<void>((resolve) => closed.close(() => resolve()));

  const lookup: EgressLookup = async (hostname) => {
    if (hostname === "upstream.test") return [{ address: "127.0.0.1", family: 4 }];
    throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: "ENOTFOUND" });
  };
  gateway = createEgressGateway({
    policy: createEgressPolicy({
      allow: [`upstream.test:${ports.http}`, `upstream.test:${ports.https}`, `upstream.test:${ports.closed}`],
      deny: [],
    }),
    log: createLogger({ level: "info", stream: new PassThrough().resume() }),
    caFile: certs.caFile,
    lookup,
  });
  socketPath = path.join(dir, "egress.sock");
  await gateway.listen(socketPath, { identity: { workspaceId: "ws_test", workerId: "wk_test", purpose: "run" } });

  // As the sandbox entry will ship it: one ES module with undici inside.
  clientBundle = path.join(dir, "client.mjs");
  await build({
    entryPoints: [path.join(here, "client.ts")],
    outfile: clientBundle,
    bundle: true,
    format: "esm",
    platform: "node",
    target: "node20",
    banner: { js: 'import { createRequire as __workyardRequire } from "node:module"; const require = __workyardRequire(import.meta.url);' },
    logLevel: "error",
  });
}, 60_000);

afterAll(async () => {
  await gateway?.close();
  for (const stop of stops.splice(0)) await stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

/**
 * Runs `body` (the inside of an async function with `http`, `https`, `url(scheme, port, path)`
 * and `collect(res)` in scope) in a child that routed through the gateway; returns what it returned.
 */
async function inWorker(body: string): Promise<any> {
  const script = path.join(dir, `worker-${Math.random().toString(36).slice(2)}.mjs`);
  fs.writeFileSync(
    script,
    `
import dns from "node:dns";
import http from "node:http";
import https from "node:https";
import { routeThroughGateway } from ${JSON.stringify(clientBundle)};
// No resolver inside a sandbox: a request that skipped the gateway fails here.
dns.lookup = (host, options, callback) => (callback ?? options)(Object.assign(new Error("no DNS in this test: " + host), { code: "ENOTFOUND" }));
routeThroughGateway(process.argv[2], process.argv[3]);
const url = (scheme, port, path) => scheme + "://upstream.test:" + port + path;
const collect = (res) => new Promise((resolve, reject) => { let text = ""; res.on("data", (c) => (text += c)); res.on("end", () => resolve(text)); res.on("error", reject); });
const result = await (async () => { ${body} })();
process.stdout.write(JSON.stringify(result));
`,
  );
  const { stdout } = await run(process.execPath, [script, socketPath, path.dirname(createRequire(import.meta.url).resolve("undici/package.json"))], { timeout: 60_000 });
  return JSON.parse(stdout);
}

describe("fetch in a worker", () => {
  it("reaches an allowed http upstream by a name only the gateway resolves", async () => {
    const result = await inWorker(`
      const res = await fetch(url("http", ${ports.http}, "/a?q=1"));
      return { status: res.status, upstream: res.headers.get("x-upstream"), text: await res.text() };
    `);
    expect(result).toEqual({ status: 200, upstream: "yes", text: "GET /a?q=1 " });
    expect(seen.find((s) => s.url === "/a?q=1")?.headers.host).toBe(`upstream.test:${ports.http}`);
  });

  it("works as @notionhq/client uses it: a Request with headers and a JSON body, the answer streamed", async () => {
    const result = await inWorker(`
      const request = new Request(url("https", ${ports.https}, "/v1/pages"), {
        method: "POST",
        headers: { authorization: "Bearer secret_x", "notion-version": "2022-06-28", "content-type": "application/json" },
        body: JSON.stringify({ parent: { page_id: "p" } }),
      });
      const res = await fetch(request);
      const reader = res.body.getReader();
      const chunks = [];
      for (;;) { const { done, value } = await reader.read(); if (done) break; chunks.push(Buffer.from(value).toString()); }
      return { status: res.status, text: chunks.join("") };
    `);
    expect(result).toEqual({ status: 200, text: 'POST /v1/pages {"parent":{"page_id":"p"}}' });
    const upstream = seen.find((s) => s.url === "/v1/pages");
    expect(upstream?.headers["notion-version"]).toBe("2022-06-28");
    expect(upstream?.headers.authorization).toBe("Bearer secret_x");
  });

  it("streams a request body, then fetches again", async () => {
    const result = await inWorker(`
      const body = new ReadableStream({ start(c) { c.enqueue(new TextEncoder().encode("one,")); c.enqueue(new TextEncoder().encode("two")); c.close(); } });
      const first = await fetch(url("http", ${ports.http}, "/stream"), { method: "PUT", body, duplex: "half" });
      const second = await fetch(url("http", ${ports.http}, "/again"));
      return [await first.text(), await second.text()];
    `);
    expect(result).toEqual(["PUT /stream one,two", "GET /again "]);
  });

  it("rejects like a network failure when the gateway denies", async () => {
    const result = await inWorker(`
      try { await fetch("http://127.0.0.1:${ports.unlisted}/"); return "answered"; }
      catch (error) { return { type: error.constructor.name, message: error.message, cause: error.cause?.message, code: error.cause?.code }; }
    `);
    expect(result).toEqual({
      type: "TypeError",
      message: "fetch failed",
      cause: `egress denied: 127.0.0.1:${ports.unlisted} is a loopback address; allow it with --egress-allow`,
      code: "EGRESS_DENIED",
    });
    expect(unlistedConnections).toBe(0);
  });

  it("rejects with the gateway's reason when the upstream cannot be reached", async () => {
    const result = await inWorker(`
      try { await fetch(url("https", ${ports.closed}, "/")); return "answered"; }
      catch (error) { return { message: error.message, cause: error.cause?.message, code: error.cause?.code }; }
    `);
    expect(result).toEqual({
      message: "fetch failed",
      cause: `could not connect to upstream.test:${ports.closed}: connection refused`,
      code: "EGRESS_ERROR",
    });
  });
});

describe("node:http and node:https in a worker", () => {
  it("http.get and https.request with a body go through the gateway", async () => {
    const result = await inWorker(`
      const plain = await new Promise((resolve, reject) => http.get(url("http", ${ports.http}, "/b"), (res) => collect(res).then(resolve, reject)).on("error", reject));
      const secure = await new Promise((resolve, reject) => {
        const req = https.request(url("https", ${ports.https}, "/c"), { method: "POST", headers: { "content-type": "text/plain" } }, (res) => collect(res).then((text) => resolve({ status: res.statusCode, text }), reject));
        req.on("error", reject);
        req.write("chunk-1 ");
        req.end("chunk-2");
      });
      return { plain, secure };
    `);
    expect(result).toEqual({ plain: "GET /b ", secure: { status: 200, text: "POST /c chunk-1 chunk-2" } });
  });

  it("routes an SDK's own keep-alive agent and a request sent with Expect: 100-continue", async () => {
    const result = await inWorker(`
      const agent = new https.Agent({ keepAlive: true, rejectUnauthorized: true });
      const viaOwnAgent = await new Promise((resolve, reject) => https.get(url("https", ${ports.https}, "/own"), { agent }, (res) => collect(res).then(resolve, reject)).on("error", reject));
      agent.destroy();
      const expect100 = await new Promise((resolve, reject) => {
        const req = http.request(url("http", ${ports.http}, "/expect"), { method: "POST", headers: { expect: "100-continue" } }, (res) => collect(res).then(resolve, reject));
        req.on("continue", () => req.end("after-continue"));
        req.on("error", reject);
      });
      return { viaOwnAgent, expect100 };
    `);
    expect(result).toEqual({ viaOwnAgent: "GET /own ", expect100: "POST /expect after-continue" });
  });

  it("emits the denial as an error instead of a response", async () => {
    const result = await inWorker(`
      return await new Promise((resolve) => {
        const req = http.get("http://127.0.0.1:${ports.unlisted}/x", () => resolve("response"));
        req.on("error", (error) => resolve({ message: error.message, code: error.code }));
      });
    `);
    expect(result).toEqual({
      message: `egress denied: 127.0.0.1:${ports.unlisted} is a loopback address; allow it with --egress-allow`,
      code: "EGRESS_DENIED",
    });
    expect(unlistedConnections).toBe(0);
  });
});

it("uses the gateway's header names", () => {
  const source = fs.readFileSync(path.join(here, "client.ts"), "utf8");
  expect(source).toContain(`const DENIED_HEADER = "${DENIED_HEADER}";`);
  expect(source).toContain(`const ERROR_HEADER = "${ERROR_HEADER}";`);
});
