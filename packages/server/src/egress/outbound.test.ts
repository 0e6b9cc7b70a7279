import { execFileSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import net, { type AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { describeOutboundFailure, createOutboundFetch } from "./outbound.js";
import { createEgressPolicy, type EgressLookup } from "./policy.js";

// Every peer binds 127.0.0.1, port 0; names resolve through an injected lookup to loopback.

const stops: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop();
});

/** Listens on 127.0.0.1; the stop drops every connection, half-closed ones included. */
async function listen(server: net.Server, port = 0): Promise<number> {
  const sockets = new Set<net.Socket>();
  server.on("connection", (socket: net.Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  stops.push(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  );
  return (server.address() as AddressInfo).port;
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A peer that speaks its own protocol, as Redis or PostgreSQL would to an HTTP request. */
function garbageServer(): { server: net.Server; connections: () => number } {
  let connections = 0;
  const server = net.createServer((socket) => {
    connections += 1;
    socket.on("error", () => undefined);
    socket.end("-ERR unknown command 'POST'\r\n\0\x01\x02 not http at all\r\n");
  });
  return { server, connections: () => connections };
}

const loopbackLookup: EgressLookup = async (hostname) => {
  if (hostname.endsWith(".test")) return [{ address: "127.0.0.1", family: 4 }];
  throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: "ENOTFOUND" });
};

/** Runs fetch and answers the folded failure (or the status, if it answered). */
async function outcome(fetchImpl: typeof fetch, url: string, init?: RequestInit) {
  try {
    const res = await fetchImpl(url, init);
    return { status: res.status };
  } catch (error) {
    return describeOutboundFailure(error, url);
  }
}

const tokenRequest: RequestInit = {
  method: "POST",
  headers: { "content-type": "application/x-www-form-urlencoded" },
  body: new URLSearchParams({ grant_type: "refresh_token", refresh_token: "canary-rt" }),
};

describe("a closed port and an open one look the same", () => {
  it("refused, a non-HTTP answer and silence give one message", async () => {
    const port = await freePort();
    const outbound = createOutboundFetch(createEgressPolicy({ allow: [`127.0.0.1:${port}`], deny: [] }), { answerTimeoutMs: 500 });
    const url = `http://127.0.0.1:${port}/token`;
    const expected = { kind: "unreachable", message: `could not get an HTTP answer from http://127.0.0.1:${port}` };

    const closed = await outcome(outbound, url, tokenRequest);

    // The same port, now open and speaking another protocol.
    const garbage = garbageServer();
    await listen(garbage.server, port);
    const open = await outcome(outbound, url, tokenRequest);
    expect(garbage.connections()).toBeGreaterThan(0);
    await stops.pop()!();

    // And open but silent, as PostgreSQL is until the client speaks first.
    const silent = net.createServer(() => undefined);
    await listen(silent, port);
    const quiet = await outcome(outbound, url, tokenRequest);

    expect(closed).toEqual(expected);
    expect(open).toEqual(expected);
    expect(quiet).toEqual(expected);
  });

  it("https to a peer that is not TLS, and an unresolvable name, give the same shape", async () => {
    const garbage = garbageServer();
    const port = await listen(garbage.server);
    const outbound = createOutboundFetch(createEgressPolicy({ allow: [`127.0.0.1:${port}`], deny: [] }), { lookup: loopbackLookup });
    expect(await outcome(outbound, `https://127.0.0.1:${port}/token`)).toEqual({
      kind: "unreachable",
      message: `could not get an HTTP answer from https://127.0.0.1:${port}`,
    });
    expect(await outcome(outbound, "https://nowhere.invalid/token")).toEqual({
      kind: "unreachable",
      message: "could not get an HTTP answer from https://nowhere.invalid",
    });
  });
});

describe("the policy", () => {
  it("denies loopback without an allow rule, before connecting", async () => {
    const garbage = garbageServer();
    const port = await listen(garbage.server);
    const outbound = createOutboundFetch(createEgressPolicy({ allow: [], deny: [] }), { lookup: loopbackLookup });
    expect(await outcome(outbound, `http://127.0.0.1:${port}/token`, tokenRequest)).toEqual({
      kind: "denied",
      message: `egress denied: 127.0.0.1:${port} is a loopback address; allow it with --egress-allow`,
    });
    expect(await outcome(outbound, `http://provider.test:${port}/token`)).toEqual({
      kind: "denied",
      message: `egress denied: provider.test (127.0.0.1):${port} is a loopback address; allow it with --egress-allow`,
    });
    expect(await outcome(outbound, `http://[::1]:${port}/token`)).toMatchObject({ kind: "denied" });
    expect(garbage.connections()).toBe(0);
  });

  it("checks every hop of a redirect", async () => {
    const garbage = garbageServer();
    const inside = await listen(garbage.server);
    const provider = http.createServer((_req, res) => res.writeHead(302, { location: `http://127.0.0.1:${inside}/` }).end());
    const port = await listen(provider);
    const outbound = createOutboundFetch(createEgressPolicy({ allow: [`127.0.0.1:${port}`], deny: [] }));
    expect(await outcome(outbound, `http://127.0.0.1:${port}/.well-known/openid-configuration`)).toEqual({
      kind: "denied",
      message: `egress denied: 127.0.0.1:${inside} is a loopback address; allow it with --egress-allow`,
    });
    expect(garbage.connections()).toBe(0);
  });

  it("reaches an allowed endpoint and answers a global Response", async () => {
    let body = "";
    const provider = http.createServer((req, res) => {
      req.on("data", (chunk: Buffer) => (body += chunk.toString()));
      req.on("end", () => res.writeHead(200, { "content-type": "application/json" }).end('{"access_token":"at"}'));
    });
    const port = await listen(provider);
    const outbound = createOutboundFetch(createEgressPolicy({ allow: [`provider.test:${port}`], deny: [] }), { lookup: loopbackLookup });
    const res = await outbound(`http://provider.test:${port}/token`, tokenRequest);
    expect(res).toBeInstanceOf(Response);
    expect(await res.json()).toEqual({ access_token: "at" });
    expect(body).toBe("grant_type=refresh_token&refresh_token=canary-rt");
  });
});

describe("through the operator's proxy (--egress-proxy)", () => {
  it("reaches a plain-http endpoint through a tunnel to the checked address (it hung on undici's assertion)", async () => {
    const provider = http.createServer((_req, res) => res.writeHead(200, { "content-type": "application/json" }).end('{"access_token":"at"}'));
    const port = await listen(provider);
    const tunnels: string[] = [];
    const proxy = http.createServer((_req, res) => res.writeHead(405).end());
    proxy.on("connect", (req: http.IncomingMessage, client: net.Socket) => {
      tunnels.push(req.url ?? "");
      const upstream = net.connect(Number(new URL(`http://${req.url}`).port), "127.0.0.1", () => {
        client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
        upstream.pipe(client).pipe(upstream);
      });
      upstream.on("error", () => client.destroy());
      client.on("error", () => upstream.destroy());
    });
    const proxyPort = await listen(proxy);
    const outbound = createOutboundFetch(createEgressPolicy({ allow: [`provider.test:${port}`], deny: [] }), {
      lookup: loopbackLookup,
      upstreamProxy: { url: new URL(`http://127.0.0.1:${proxyPort}`), direct: [] },
    });
    const res = await outbound(`http://provider.test:${port}/token`, { ...tokenRequest, signal: AbortSignal.timeout(5000) });
    expect(await res.json()).toEqual({ access_token: "at" });
    expect(tunnels).toEqual([`127.0.0.1:${port}`]);
  });
});

describe("https", () => {
  it("verifies the certificate against the name, with the configured CA", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wy-outbound-"));
    stops.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    fs.writeFileSync(path.join(dir, "leaf.ext"), "subjectAltName=DNS:provider.test\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n");
    openssl("req", "-x509", ...ec, "-days", "2", "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=Workyard outbound test CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"); // prettier-ignore
    openssl("req", ...ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=provider.test");
    openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-out", "leaf.crt", "-extfile", "leaf.ext"); // prettier-ignore
    const provider = https.createServer(
      { key: fs.readFileSync(path.join(dir, "leaf.key")), cert: fs.readFileSync(path.join(dir, "leaf.crt")) },
      (_req, res) => res.end("ok"),
    );
    const port = await listen(provider);
    const policy = createEgressPolicy({ allow: [`provider.test:${port}`, `other.test:${port}`], deny: [] });

    const trusting = createOutboundFetch(policy, { lookup: loopbackLookup, caFile: path.join(dir, "ca.crt") });
    expect(await (await trusting(`https://provider.test:${port}/token`)).text()).toBe("ok");
    // The certificate names provider.test, not other.test, though both resolve to the same address.
    expect(await outcome(trusting, `https://other.test:${port}/token`)).toMatchObject({ kind: "unreachable" });

    const untrusting = createOutboundFetch(policy, { lookup: loopbackLookup });
    expect(await outcome(untrusting, `https://provider.test:${port}/token`)).toEqual({
      kind: "unreachable",
      message: `could not get an HTTP answer from https://provider.test:${port}`,
    });
  });
});
