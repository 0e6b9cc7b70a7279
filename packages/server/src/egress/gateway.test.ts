import { execFileSync } from "node:child_process";
import fs from "node:fs";
import http, { type IncomingHttpHeaders } from "node:http";
import https from "node:https";
import net, { type AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import type { TLSSocket } from "node:tls";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../log.js";
import { createEgressGateway, DENIED_HEADER, ERROR_HEADER, type EgressGatewayOptions, type ListenOptions } from "./gateway.js";
import { createEgressPolicy, type EgressLookup } from "./policy.js";

// Every upstream binds 127.0.0.1, port 0; names resolve through an injected lookup to loopback
// only, so no socket is ever opened to another address.

const identity = { workspaceId: "ws_test", workerId: "wk_test", purpose: "run" } as const;
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wy-egress-"));
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

interface Certificates {
  caFile: string;
  key: string;
  cert: string;
  /** A certificate for the same names from a CA nobody trusts. */
  untrustedKey: string;
  untrustedCert: string;
}

/** A CA and a leaf for upstream.test, localhost and 127.0.0.1, plus the same from a stranger CA. */
function makeCertificates(dir: string): Certificates {
  const run = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  const ext = path.join(dir, "leaf.ext");
  fs.writeFileSync(ext, "subjectAltName=DNS:upstream.test,DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n");
  for (const name of ["trusted", "stranger"]) {
    run(
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
      "-keyout", `${name}-ca.key`, "-out", `${name}-ca.crt`, "-subj", `/CN=Workyard ${name} test CA`,
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    ); // prettier-ignore
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", "/CN=upstream.test");
    run(
      "x509", "-req", "-in", `${name}.csr`, "-CA", `${name}-ca.crt`, "-CAkey", `${name}-ca.key`, "-CAcreateserial",
      "-days", "2", "-out", `${name}.crt`, "-extfile", ext,
    ); // prettier-ignore
  }
  const read = (file: string) => fs.readFileSync(path.join(dir, file), "utf8");
  return {
    caFile: path.join(dir, "trusted-ca.crt"),
    key: read("trusted.key"),
    cert: read("trusted.crt"),
    untrustedKey: read("stranger.key"),
    untrustedCert: read("stranger.crt"),
  };
}

interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
  servername?: string;
}

interface Upstream {
  port: number;
  seen: Seen[];
  connections: number;
  maxInFlight: number;
}

/** An upstream on 127.0.0.1 that records what reaches it and echoes a little back. */
async function startUpstream(tlsOptions?: { key: string; cert: string }, delayMs = 0): Promise<Upstream> {
  const state: Upstream = { port: 0, seen: [], connections: 0, maxInFlight: 0 };
  let inFlight = 0;
  const handler: http.RequestListener = (req, res) => {
    inFlight += 1;
    state.maxInFlight = Math.max(state.maxInFlight, inFlight);
    let body = "";
    req.on("data", (chunk: Buffer) => (body += chunk.toString()));
    req.on("end", () => {
      state.seen.push({ method: req.method!, url: req.url!, headers: req.headers, body, servername: (req.socket as TLSSocket).servername || undefined });
      setTimeout(() => {
        inFlight -= 1;
        res.writeHead(201, { "content-type": "text/plain", "set-cookie": ["a=1", "b=2"], "x-upstream": "yes", connection: "keep-alive, x-private", "x-private": "no", [DENIED_HEADER]: "forged by the upstream" }); // prettier-ignore
        res.write("hello ");
        res.end(`${req.method} ${req.url} ${body}`);
      }, delayMs);
    });
  };
  const server = tlsOptions ? https.createServer(tlsOptions, handler) : http.createServer(handler);
  server.on(tlsOptions ? "secureConnection" : "connection", () => (state.connections += 1));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  state.port = (server.address() as AddressInfo).port;
  cleanups.push(() => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  })); // prettier-ignore
  return state;
}

/** A TCP listener on 127.0.0.1 counting connections, for "nothing reached it" checks. */
async function startCountingListener(): Promise<{ port: number; connections: () => number }> {
  let connections = 0;
  const server = net.createServer((socket) => {
    connections += 1;
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { port: (server.address() as AddressInfo).port, connections: () => connections };
}

/** A port on 127.0.0.1 nothing listens on. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const loopbackLookup: EgressLookup = async (hostname) => {
  if (hostname.endsWith(".test")) return [{ address: "127.0.0.1", family: 4 }];
  throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: "ENOTFOUND" });
};

async function startGateway(
  rules: { allow?: string[]; deny?: string[] },
  extra: Partial<EgressGatewayOptions> = {},
  listenOptions: ListenOptions = { identity },
) {
  let logs = "";
  const stream = new PassThrough();
  stream.on("data", (chunk: Buffer) => (logs += chunk.toString()));
  const gateway = createEgressGateway({
    policy: createEgressPolicy({ allow: rules.allow ?? [], deny: rules.deny ?? [] }),
    log: createLogger({ level: "info", stream }),
    lookup: loopbackLookup,
    ...extra,
  });
  const socketPath = path.join(tempDir(), "egress.sock");
  const listener = await gateway.listen(socketPath, listenOptions);
  cleanups.push(() => gateway.close());
  return { socketPath, listener, gateway, logs: () => logs };
}

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** One request to the gateway in absolute form, as the sandbox's agents send it. */
function viaGateway(
  socketPath: string,
  url: string,
  init: { method?: string; headers?: Record<string, string>; body?: string[]; path?: string } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      socketPath,
      agent: false,
      method: init.method ?? "GET",
      path: init.path ?? url,
      headers: { host: new URL(url).host, ...init.headers },
    });
    req.on("error", reject);
    req.on("response", (res) => {
      let body = "";
      res.on("data", (chunk: Buffer) => (body += chunk.toString()));
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    for (const chunk of init.body ?? []) req.write(chunk);
    req.end();
  });
}

describe("http through the gateway", () => {
  it("forwards an allowed absolute-form request and streams the answer back", async () => {
    const upstream = await startUpstream();
    const { socketPath } = await startGateway({ allow: [`127.0.0.1:${upstream.port}`] });
    const answer = await viaGateway(socketPath, `http://127.0.0.1:${upstream.port}/items?x=1`, {
      method: "POST",
      headers: { "content-type": "text/plain", "proxy-authorization": "Basic c2VjcmV0", connection: "x-hop", "x-hop": "1", "x-kept": "2" },
      body: ["part one, ", "part two"],
    });
    expect(answer.status).toBe(201);
    expect(answer.body).toBe("hello POST /items?x=1 part one, part two");
    expect(answer.headers["set-cookie"]).toEqual(["a=1", "b=2"]);
    expect(answer.headers["x-upstream"]).toBe("yes");
    expect(answer.headers["x-private"]).toBeUndefined();
    expect(answer.headers[DENIED_HEADER]).toBeUndefined();
    const [seen] = upstream.seen;
    expect(seen?.url).toBe("/items?x=1");
    expect(seen?.headers.host).toBe(`127.0.0.1:${upstream.port}`);
    expect(seen?.headers["x-kept"]).toBe("2");
    expect(seen?.headers["proxy-authorization"]).toBeUndefined();
    expect(seen?.headers["x-hop"]).toBeUndefined();
  });

  it("keeps the worker's connection alive across requests", async () => {
    const upstream = await startUpstream();
    const { socketPath } = await startGateway({ allow: [`127.0.0.1:${upstream.port}`] });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    cleanups.push(() => agent.destroy());
    const sockets = new Set<unknown>();
    for (let i = 0; i < 3; i++) {
      await new Promise<void>((resolve, reject) => {
        const url = `http://127.0.0.1:${upstream.port}/n${i}`;
        const req = http.get({ socketPath, agent, path: url, headers: { host: new URL(url).host } }, (res) => {
          sockets.add(req.socket);
          res.resume().on("end", resolve);
        });
        req.on("error", reject);
      });
    }
    expect(sockets.size).toBe(1);
    expect(upstream.seen.map((s) => s.url)).toEqual(["/n0", "/n1", "/n2"]);
  });

  it("denies loopback by default, before connecting", async () => {
    const target = await startCountingListener();
    const { socketPath, logs } = await startGateway({});
    const answer = await viaGateway(socketPath, `http://127.0.0.1:${target.port}/`, { headers: { authorization: "Bearer canary-3f9a" } });
    const message = `egress denied: 127.0.0.1:${target.port} is a loopback address; allow it with --egress-allow`;
    expect(answer.status).toBe(403);
    expect(answer.headers[DENIED_HEADER]).toBe(message);
    expect(answer.body).toBe(`${message}\n`);
    expect(target.connections()).toBe(0);
    const line = JSON.parse(logs().trim().split("\n").at(-1)!);
    expect(line).toMatchObject({ level: 30, msg: "egress denied", egress: { workspaceId: "ws_test", workerId: "wk_test", purpose: "run", target: `127.0.0.1:${target.port}`, category: "loopback" } }); // prettier-ignore
    expect(logs()).not.toContain("canary-3f9a");
  });

  it("checks the resolved address: a name that resolves to loopback is denied", async () => {
    const target = await startCountingListener();
    const { socketPath } = await startGateway({});
    const answer = await viaGateway(socketPath, `http://rebind.test:${target.port}/`);
    expect(answer.status).toBe(403);
    expect(answer.headers[DENIED_HEADER]).toBe(
      `egress denied: rebind.test (127.0.0.1):${target.port} is a loopback address; allow it with --egress-allow`,
    );
    expect(target.connections()).toBe(0);
  });

  it("connects to the first allowed address the name resolves to", async () => {
    const upstream = await startUpstream();
    const lookup: EgressLookup = async () => [
      { address: "127.0.0.2", family: 4 },
      { address: "127.0.0.1", family: 4 },
    ];
    const { socketPath } = await startGateway({ allow: [`127.0.0.1:${upstream.port}`] }, { lookup });
    const answer = await viaGateway(socketPath, `http://two.test:${upstream.port}/`);
    expect(answer.status).toBe(201);
    expect(upstream.seen[0]?.headers.host).toBe(`two.test:${upstream.port}`);
  });

  it("lets an explicit deny rule win over an allow rule", async () => {
    const target = await startCountingListener();
    const { socketPath } = await startGateway({ allow: [`127.0.0.1:${target.port}`], deny: ["127.0.0.0/8"] });
    const answer = await viaGateway(socketPath, `http://127.0.0.1:${target.port}/`);
    expect(answer.headers[DENIED_HEADER]).toBe(`egress denied: 127.0.0.1:${target.port} is denied by --egress-deny 127.0.0.0/8`);
    expect(target.connections()).toBe(0);
  });

  it("answers 502 with the reason when the upstream refuses or the name does not resolve", async () => {
    const port = await closedPort();
    const { socketPath } = await startGateway({ allow: [`127.0.0.1:${port}`] });
    const refused = await viaGateway(socketPath, `http://127.0.0.1:${port}/`);
    expect(refused.status).toBe(502);
    expect(refused.headers[ERROR_HEADER]).toBe(`could not connect to 127.0.0.1:${port}: connection refused`);
    const unknown = await viaGateway(socketPath, "http://nowhere.invalid/");
    expect(unknown.status).toBe(502);
    expect(unknown.headers[ERROR_HEADER]).toBe("could not resolve nowhere.invalid (ENOTFOUND)");
  });

  it("answers 400 to an origin-form request", async () => {
    const { socketPath } = await startGateway({});
    const answer = await viaGateway(socketPath, "http://example.test/", { path: "/just-a-path" });
    expect(answer.status).toBe(400);
    expect(answer.headers[ERROR_HEADER]).toMatch(/takes requests in absolute form \(GET https:\/\/host\/path\)/);
  });

  it("passes the headers through the hook on their way upstream", async () => {
    const upstream = await startUpstream();
    const seenByHook: unknown[] = [];
    const { socketPath } = await startGateway(
      { allow: [`127.0.0.1:${upstream.port}`] },
      {
        upstreamHeaders: async (request) => {
          seenByHook.push({ ...request, headers: { ...request.headers } });
          return { ...request.headers, "x-injected": "yes" };
        },
      },
    );
    await viaGateway(socketPath, `http://127.0.0.1:${upstream.port}/h`, { headers: { "x-mine": "1" } });
    expect(upstream.seen[0]?.headers["x-injected"]).toBe("yes");
    expect(seenByHook[0]).toMatchObject({ identity, protocol: "http:", host: "127.0.0.1", port: upstream.port, method: "GET", headers: { "x-mine": "1", host: `127.0.0.1:${upstream.port}` } }); // prettier-ignore
  });

  it("frees the slot of a worker that hung up while its name was resolving", async () => {
    const upstream = await startUpstream();
    let answerLookup: () => void = () => undefined;
    const lookup: EgressLookup = (hostname) =>
      hostname === "slow.test"
        ? new Promise((resolve) => (answerLookup = () => resolve([{ address: "127.0.0.1", family: 4 }])))
        : loopbackLookup(hostname);
    const { socketPath } = await startGateway({ allow: [`127.0.0.1:${upstream.port}`] }, { lookup, maxConcurrent: 1 });
    const slow = http.request({ socketPath, agent: false, path: `http://slow.test:${upstream.port}/`, headers: { host: "slow.test" } });
    slow.on("error", () => undefined);
    slow.end();
    await new Promise((resolve) => setTimeout(resolve, 50));
    slow.destroy();
    await new Promise((resolve) => setTimeout(resolve, 50));
    answerLookup();
    const next = await viaGateway(socketPath, `http://127.0.0.1:${upstream.port}/next`);
    expect(next.status).toBe(201);
    expect(upstream.seen.map((s) => s.url)).toEqual(["/next"]);
    expect(upstream.connections).toBe(1);
  });

  it("holds upstream requests beyond the limit until others finish", async () => {
    const upstream = await startUpstream(undefined, 30);
    const { socketPath } = await startGateway({ allow: [`127.0.0.1:${upstream.port}`] }, { maxConcurrent: 2 });
    const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => viaGateway(socketPath, `http://127.0.0.1:${upstream.port}/${i}`)));
    expect(answers.map((a) => a.status)).toEqual([201, 201, 201, 201, 201, 201]);
    expect(upstream.maxInFlight).toBeLessThanOrEqual(2);
  });

  it("creates the socket world-writable and removes it on close", async () => {
    const { socketPath, listener } = await startGateway({});
    expect(fs.statSync(socketPath).mode & 0o777).toBe(0o666);
    await listener.close();
    expect(fs.existsSync(socketPath)).toBe(false);
  });
});

describe("https through the gateway", () => {
  let certs: Certificates;
  beforeAll(() => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wy-egress-ca-"));
    certs = makeCertificates(dir);
    return () => fs.rmSync(dir, { recursive: true, force: true });
  });

  it("originates TLS, verifying the name against the configured CA", async () => {
    const upstream = await startUpstream({ key: certs.key, cert: certs.cert });
    const { socketPath } = await startGateway({ allow: [`upstream.test:${upstream.port}`, `127.0.0.1:${upstream.port}`] }, { caFile: certs.caFile });
    const byName = await viaGateway(socketPath, `https://upstream.test:${upstream.port}/secure`, { method: "PUT", body: ["data"] });
    expect(byName.status).toBe(201);
    expect(byName.body).toBe("hello PUT /secure data");
    expect(upstream.seen[0]?.servername).toBe("upstream.test");
    const byAddress = await viaGateway(socketPath, `https://127.0.0.1:${upstream.port}/ip`);
    expect(byAddress.status).toBe(201);
  });

  it("refuses a certificate from a CA it does not trust", async () => {
    const upstream = await startUpstream({ key: certs.untrustedKey, cert: certs.untrustedCert });
    const { socketPath } = await startGateway({ allow: [`upstream.test:${upstream.port}`] }, { caFile: certs.caFile });
    const answer = await viaGateway(socketPath, `https://upstream.test:${upstream.port}/`);
    expect(answer.status).toBe(502);
    expect(answer.headers[ERROR_HEADER]).toMatch(/^TLS certificate of upstream\.test is not trusted: /);
    expect(upstream.seen).toHaveLength(0);
  });

  it("checks the certificate against the requested name, not the pinned address", async () => {
    const upstream = await startUpstream({ key: certs.key, cert: certs.cert });
    const { socketPath } = await startGateway({ allow: [`other.test:${upstream.port}`] }, { caFile: certs.caFile });
    const answer = await viaGateway(socketPath, `https://other.test:${upstream.port}/`);
    expect(answer.status).toBe(502);
    expect(answer.headers[ERROR_HEADER]).toMatch(/^TLS certificate of other\.test is not trusted: .*other\.test/);
  });

  it("trusts nothing extra without caFile", async () => {
    const upstream = await startUpstream({ key: certs.key, cert: certs.cert });
    const { socketPath } = await startGateway({ allow: [`upstream.test:${upstream.port}`] });
    const answer = await viaGateway(socketPath, `https://upstream.test:${upstream.port}/`);
    expect(answer.headers[ERROR_HEADER]).toMatch(/^TLS certificate of upstream\.test is not trusted: /);
  });

  it("takes a CA file of OpenSSL's TRUSTED CERTIFICATE blocks", async () => {
    const trusted = path.join(tempDir(), "trusted-form.crt");
    execFileSync("openssl", ["x509", "-in", certs.caFile, "-trustout", "-addtrust", "serverAuth", "-out", trusted]);
    expect(fs.readFileSync(trusted, "utf8")).toContain("BEGIN TRUSTED CERTIFICATE");
    const upstream = await startUpstream({ key: certs.key, cert: certs.cert });
    const { socketPath } = await startGateway({ allow: [`upstream.test:${upstream.port}`] }, { caFile: trusted });
    expect((await viaGateway(socketPath, `https://upstream.test:${upstream.port}/secure`)).status).toBe(201);
  });

  it("refuses a CA file it cannot read or that holds no certificate when it is created, not at the first https request", () => {
    const dir = tempDir();
    const notPem = path.join(dir, "not-a-ca.crt");
    fs.writeFileSync(notPem, "not a certificate\n");
    const create = (caFile: string) => () =>
      createEgressGateway({ policy: createEgressPolicy({ allow: [], deny: [] }), log: createLogger({ level: "silent", stream: new PassThrough() }), lookup: loopbackLookup, caFile });
    expect(create(path.join(dir, "missing.crt"))).toThrow(/^--egress-ca-file .*missing\.crt cannot be read: ENOENT\.$/);
    expect(create(notPem)).toThrow(/^--egress-ca-file .*not-a-ca\.crt holds no usable PEM certificate\.$/);
  });
});

/** Opens a CONNECT tunnel; resolves with the status line and, on 200, the socket. */
function connectVia(socketPath: string, authority: string): Promise<{ status: number; headers: IncomingHttpHeaders; socket?: net.Socket }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, agent: false, method: "CONNECT", path: authority, headers: { host: authority } });
    req.on("connect", (res, socket) => resolve({ status: res.statusCode!, headers: res.headers, socket }));
    req.on("response", (res) => {
      res.resume();
      resolve({ status: res.statusCode!, headers: res.headers });
    });
    req.on("error", reject);
    req.end();
  });
}

describe("CONNECT", () => {
  const build = (host: string, port: number): ListenOptions => ({
    identity: { workspaceId: "ws_test", purpose: "build" },
    onlyTargets: [{ host, port }],
  });

  it("tunnels to a named target by name, even when it resolves to loopback", async () => {
    const upstream = await startUpstream();
    const { socketPath } = await startGateway({}, {}, build("registry.test", upstream.port));
    const tunnel = await connectVia(socketPath, `registry.test:${upstream.port}`);
    expect(tunnel.status).toBe(200);
    const socket = tunnel.socket!;
    cleanups.push(() => socket.destroy());
    socket.write(`GET /pkg HTTP/1.1\r\nhost: registry.test\r\nconnection: close\r\n\r\n`);
    let reply = "";
    for await (const chunk of socket) {
      reply += String(chunk);
      if (reply.endsWith("\r\n0\r\n\r\n")) break; // the last chunk
    }
    expect(reply).toMatch(/^HTTP\/1\.1 201/);
    expect(upstream.seen[0]?.url).toBe("/pkg");
  });

  it("reaches the named target in absolute form too, and nothing else", async () => {
    const upstream = await startUpstream();
    const other = await startCountingListener();
    const { socketPath, logs } = await startGateway({}, {}, build("registry.test", upstream.port));
    expect((await viaGateway(socketPath, `http://registry.test:${upstream.port}/pkg`)).status).toBe(201);
    const denied = await viaGateway(socketPath, `http://127.0.0.1:${other.port}/`);
    expect(denied.status).toBe(403);
    expect(denied.headers[DENIED_HEADER]).toBe(
      `egress denied: 127.0.0.1:${other.port} is not reachable from a build; it reaches only registry.test:${upstream.port}`,
    );
    const tunnel = await connectVia(socketPath, `127.0.0.1:${other.port}`);
    expect(tunnel.status).toBe(403);
    expect(other.connections()).toBe(0);
    expect(logs()).toContain('"purpose":"build"');
  });

  it("never tunnels to an address an explicit deny rule names", async () => {
    const other = await startCountingListener();
    const { socketPath } = await startGateway({ deny: ["127.0.0.1"] }, {}, build("registry.test", other.port));
    const tunnel = await connectVia(socketPath, `registry.test:${other.port}`);
    expect(tunnel.status).toBe(403);
    expect(tunnel.headers[DENIED_HEADER]).toBe(`egress denied: registry.test (127.0.0.1):${other.port} is denied by --egress-deny 127.0.0.1`);
    expect(other.connections()).toBe(0);
  });

  it("is refused to workers, with the way HTTPS goes instead", async () => {
    const other = await startCountingListener();
    const { socketPath } = await startGateway({ allow: [`127.0.0.1:${other.port}`] });
    const tunnel = await connectVia(socketPath, `127.0.0.1:${other.port}`);
    expect(tunnel.status).toBe(403);
    expect(tunnel.headers[DENIED_HEADER]).toMatch(/CONNECT is not available to workers; HTTPS goes through the gateway as absolute-form requests/);
    expect(other.connections()).toBe(0);
  });

  it("answers 502 when the named target refuses", async () => {
    const port = await closedPort();
    const { socketPath } = await startGateway({}, {}, build("registry.test", port));
    const tunnel = await connectVia(socketPath, `registry.test:${port}`);
    expect(tunnel.status).toBe(502);
    expect(tunnel.headers[ERROR_HEADER]).toBe(`could not connect to registry.test:${port}: connection refused`);
  });
});

describe("through the operator's proxy (HTTPS_PROXY / --egress-proxy)", () => {
  /** A CONNECT proxy on 127.0.0.1 that, like a real one, resolves names itself: here, all to loopback. */
  async function startProxy(options: { refuse?: boolean } = {}) {
    const tunnels: string[] = [];
    const server = http.createServer((_req, res) => res.writeHead(405).end());
    server.on("connect", (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
      tunnels.push(`${req.url} ${req.headers["proxy-authorization"] ?? ""}`.trim());
      if (options.refuse) {
        client.end("HTTP/1.1 403 Forbidden\r\n\r\n");
        return;
      }
      const port = Number(new URL(`http://${req.url}`).port);
      const upstream = net.connect(port, "127.0.0.1", () => {
        client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
        if (head.length) upstream.write(head);
        upstream.pipe(client).pipe(upstream);
      });
      upstream.on("error", () => client.destroy());
      client.on("error", () => upstream.destroy());
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    cleanups.push(() => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    })); // prettier-ignore
    return { url: new URL(`http://user:p%40ss@127.0.0.1:${(server.address() as AddressInfo).port}`), tunnels };
  }

  it("a build reaches its registry through a tunnel the proxy opens, by name, without resolving it here", async () => {
    const upstream = await startUpstream();
    const proxy = await startProxy();
    // No lookup answers registry.example: only the proxy knows the name.
    const { socketPath } = await startGateway(
      {},
      { upstreamProxy: { url: proxy.url, direct: [] }, lookup: async () => Promise.reject(Object.assign(new Error("ENOTFOUND"), { code: "ENOTFOUND" })) },
      { identity: { workspaceId: "ws_test", purpose: "build" }, onlyTargets: [{ host: "registry.example", port: upstream.port }] },
    );
    const tunnel = await connectVia(socketPath, `registry.example:${upstream.port}`);
    expect(tunnel.status).toBe(200);
    tunnel.socket!.destroy();
    expect(proxy.tunnels).toEqual([`registry.example:${upstream.port} Basic ${Buffer.from("user:p@ss").toString("base64")}`]);
  });

  it("a worker's request goes through the proxy after the policy said yes; a denied one never reaches it", async () => {
    const upstream = await startUpstream();
    const proxy = await startProxy();
    const { socketPath } = await startGateway({ allow: [`upstream.test:${upstream.port}`] }, { upstreamProxy: { url: proxy.url, direct: [] } });
    const answer = await viaGateway(socketPath, `http://upstream.test:${upstream.port}/via-proxy`);
    expect(answer.status).toBe(201);
    expect(upstream.seen[0]?.url).toBe("/via-proxy");
    // To the address the policy checked: the proxy does not get to resolve the name anew.
    expect(proxy.tunnels).toEqual([`127.0.0.1:${upstream.port} ${"Basic " + Buffer.from("user:p@ss").toString("base64")}`]);
    const denied = await viaGateway(socketPath, `http://other.test:${upstream.port}/`);
    expect(denied.status).toBe(403);
    expect(proxy.tunnels).toHaveLength(1);
  });

  it("NO_PROXY names are reached directly; a proxy that refuses the tunnel gives a 502 saying so", async () => {
    const upstream = await startUpstream();
    const refusing = await startProxy({ refuse: true });
    const { socketPath } = await startGateway({ allow: [`upstream.test:${upstream.port}`, `direct.test:${upstream.port}`] }, { upstreamProxy: { url: refusing.url, direct: ["direct.test"] } });
    expect((await viaGateway(socketPath, `http://direct.test:${upstream.port}/`)).status).toBe(201);
    const refused = await viaGateway(socketPath, `http://upstream.test:${upstream.port}/`);
    expect(refused.status).toBe(502);
    // The tunnel goes to the address the policy checked, not to the name.
    expect(refused.headers[ERROR_HEADER]).toMatch(/proxy refused the tunnel to 127\.0\.0\.1:\d+ \(HTTP 403\)/);
  });
});

describe("names and Host (security review, finding 9)", () => {
  it("sends the URL's host upstream, never the worker's own Host header", async () => {
    const upstream = await startUpstream();
    const { socketPath } = await startGateway({ allow: [`upstream.test:${upstream.port}`] });
    const answer = await viaGateway(socketPath, `http://upstream.test:${upstream.port}/front`, { headers: { host: "denied.example" } });
    expect(answer.status).toBe(201);
    expect(upstream.seen[0]?.headers.host).toBe(`upstream.test:${upstream.port}`);
  });

  it("refuses a name an --egress-deny rule names before looking it up", async () => {
    const looked: string[] = [];
    const { socketPath } = await startGateway(
      { deny: ["secret.test"] },
      { lookup: async (name) => (looked.push(name), [{ address: "127.0.0.1", family: 4 }]) },
    );
    const answer = await viaGateway(socketPath, "http://secret.test:80/");
    expect(answer.status).toBe(403);
    expect(answer.headers[DENIED_HEADER]).toBe("egress denied: secret.test:80 is denied by --egress-deny secret.test");
    expect(looked).toEqual([]);
  });
});
