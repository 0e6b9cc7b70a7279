import fs from "node:fs";
import { X509Certificate } from "node:crypto";
import http, { type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from "node:http";
import https from "node:https";
import net, { isIP, type Socket } from "node:net";
import tls from "node:tls";
import { ConfigError } from "../config.js";
import type { Logger } from "../log.js";
import { EgressDeniedError, resolveAllowed, systemLookup, type EgressLookup, type EgressPolicy } from "./policy.js";
import { connectThroughProxy, viaProxy, type UpstreamProxy } from "./upstream.js";
import { Slots } from "../slots.js";

/**
 * The egress gateway: an HTTP forward proxy on a Unix socket bound into each sandbox, the only
 * way out of a network namespace that has loopback alone. Workers send every request in
 * absolute form (`GET https://api.example.com/v1/x`, plain HTTP over the socket); the gateway
 * resolves the name, checks the policy on the resolved address, connects to exactly that
 * address (so a rebinding resolver cannot swap it afterwards) and, for https, originates TLS
 * itself, verifying the certificate against the requested name.
 *
 * Answers of its own carry a header the worker-side client (client.ts) turns into an error:
 * 403 + `x-workyard-egress-denied` when the policy says no, 502 + `x-workyard-egress-error`
 * when the upstream cannot be reached, 400 for requests that are not in absolute form.
 */

export const DENIED_HEADER = "x-workyard-egress-denied";
export const ERROR_HEADER = "x-workyard-egress-error";

/** Whose traffic a listener carries; it goes into every log line about it. */
export interface GatewayIdentity {
  workspaceId: string;
  workerId?: string;
  purpose: "run" | "build";
}

export interface NamedTarget {
  host: string;
  port: number;
}

export interface ListenOptions {
  identity: GatewayIdentity;
  /**
   * Builds: the only host:port pairs this listener reaches (the npm registry), by name whatever
   * they resolve to (only --egress-deny rules still apply), through CONNECT or absolute-form
   * requests. Without it (worker runs) the policy decides, and CONNECT is refused.
   */
  onlyTargets?: NamedTarget[];
}

/** A request on its way upstream, as the header hook sees it. */
export interface UpstreamRequest {
  identity: GatewayIdentity;
  protocol: "http:" | "https:";
  host: string;
  port: number;
  method: string;
  /** Lower-case names; hop-by-hop and Proxy-* headers already removed, Host kept. */
  headers: OutgoingHttpHeaders;
}

export interface EgressGatewayOptions {
  policy: EgressPolicy;
  log: Pick<Logger, "info" | "debug">;
  /** Extra PEM CA certificates trusted for https upstreams (config `egressCaFile`). */
  caFile?: string;
  /** Name -> addresses; tests inject one, the default asks the system resolver. */
  lookup?: EgressLookup;
  /** TCP connect to an upstream; default 10 s. */
  connectTimeoutMs?: number;
  /** Silence on an upstream connection (no response bytes) before it is dropped; default 5 min. */
  idleTimeoutMs?: number;
  /** Upstream requests and tunnels in flight per listener; more wait their turn. Default 64. */
  maxConcurrent?: number;
  /**
   * The one place a request's headers pass through on their way upstream: credential injection
   * adds per-destination headers here. Returns the headers to send.
   */
  upstreamHeaders?: (request: UpstreamRequest) => OutgoingHttpHeaders | Promise<OutgoingHttpHeaders>;
  /** The operator's HTTP proxy: connections go through it (CONNECT) once the policy said yes. */
  upstreamProxy?: UpstreamProxy;
}

export interface GatewayListener {
  path: string;
  close(): Promise<void>;
}

export interface EgressGateway {
  /** Serve one sandbox on a new Unix socket at socketPath (mode 0666, removed on close). */
  listen(socketPath: string, options: ListenOptions): Promise<GatewayListener>;
  close(): Promise<void>;
}

const MAX_HEADER_BYTES = 32 * 1024;

/** Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the proxy's own. */
const HOP_BY_HOP = new Set(["connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "expect", "host"]);

function endToEnd(headers: IncomingMessage["headers"]): OutgoingHttpHeaders {
  const named = new Set(
    String(headers.connection ?? "")
      .split(",")
      .map((name) => name.trim().toLowerCase()),
  );
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    // The gateway's own answer headers come from the gateway alone, never from an upstream.
    if (value === undefined || HOP_BY_HOP.has(name) || named.has(name) || name.startsWith("proxy-") || name.startsWith("x-workyard-egress-")) {
      continue;
    }
    out[name] = value;
  }
  return out;
}

/**
 * What the gateway and the server's outbound fetch trust for https upstreams: Node's bundled
 * roots, the system bundle when present, NODE_EXTRA_CA_CERTS (read here too: an explicit CA list
 * replaces Node's default store, extras included) and the configured extra file.
 *
 * Parsing those bundles costs ~70 ms of CPU, so the context is built on the first https
 * connection, once per process for both users. An --egress-ca-file is read and checked at once
 * all the same, so a bad one stops the server at its start rather than at a worker's first fetch.
 */
export function trustedSecureContext(caFile?: string): () => tls.SecureContext {
  const key = caFile ?? "";
  const extra = caFile === undefined ? undefined : readCaFile(caFile);
  return () => {
    let context = trustedContexts.get(key);
    if (!context) trustedContexts.set(key, (context = buildTrustedSecureContext(extra)));
    return context;
  };
}

const trustedContexts = new Map<string, tls.SecureContext>();

/** Node's roots, the system's bundles, and the operator's certificates (`extra`, read at start). */
function buildTrustedSecureContext(extra: string | undefined): tls.SecureContext {
  const ca: string[] = [...tls.rootCertificates];
  // A set: NODE_EXTRA_CA_CERTS is often the system bundle itself. One that cannot be read is
  // skipped, as Node skips it (this runs at a first https connection, where a throw has no one to
  // tell).
  for (const file of new Set(["/etc/ssl/certs/ca-certificates.crt", process.env.NODE_EXTRA_CA_CERTS])) {
    try {
      if (file) ca.push(fs.readFileSync(file, "utf8"));
    } catch {
      // missing or unreadable
    }
  }
  if (extra) ca.push(extra);
  return tls.createSecureContext({ ca });
}

/** The operator's extra CAs; at least one must parse (Node skips a PEM block it cannot read without a word). */
function readCaFile(caFile: string): string {
  let text: string;
  try {
    text = fs.readFileSync(caFile, "utf8");
  } catch (error) {
    throw new ConfigError(`--egress-ca-file ${caFile} cannot be read: ${(error as NodeJS.ErrnoException).code ?? String(error)}.`);
  }
  const blocks = text.match(/-----BEGIN (?:TRUSTED )?CERTIFICATE-----[\s\S]+?-----END (?:TRUSTED )?CERTIFICATE-----/g) ?? [];
  const usable = blocks.filter((block) => {
    try {
      new X509Certificate(block);
      return true;
    } catch {
      return false;
    }
  });
  if (usable.length === 0) throw new ConfigError(`--egress-ca-file ${caFile} holds no usable PEM certificate.`);
  return usable.join("\n");
}

/** `host:port`, with IPv6 literals in brackets. */
function authority(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

const UNTRUSTED_CERT = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_UNTRUSTED",
  "CERT_REVOKED",
  "CERT_SIGNATURE_FAILURE",
  "CERT_CHAIN_TOO_LONG",
  "INVALID_CA",
  "UNABLE_TO_DECRYPT_CERT_SIGNATURE",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/** One line a worker can act on. Workers may learn the precise cause; the server's own calls may not (outbound.ts). */
export function describeUpstreamError(error: unknown, host: string, port: number): string {
  const code = (error as NodeJS.ErrnoException).code ?? "";
  const message = error instanceof Error ? error.message : String(error);
  const where = authority(host, port);
  if (code === "ECONNREFUSED") return `could not connect to ${where}: connection refused`;
  if (code === "EHOSTUNREACH") return `could not connect to ${where}: host unreachable`;
  if (code === "ENETUNREACH") return `could not connect to ${where}: network unreachable`;
  if (code === "ETIMEDOUT" || code === "EGRESS_CONNECT_TIMEOUT") return `could not connect to ${where}: ${message}`;
  if (code === "EGRESS_IDLE_TIMEOUT") return `${where} ${message}`;
  if (code === "ECONNRESET" || code === "EPIPE") return `connection to ${where} was reset`;
  if (code === "ENOTFOUND" || code === "EAI_AGAIN" || code === "ENODATA") return `could not resolve ${host} (${code})`;
  if (UNTRUSTED_CERT.has(code)) return `TLS certificate of ${host} is not trusted: ${message}`;
  if (code.startsWith("ERR_SSL_") || code === "EPROTO") return `TLS handshake with ${where} failed: ${message}`;
  if (code.startsWith("HPE_")) return `${where} did not answer with HTTP: ${message}`;
  return `request to ${where} failed: ${message}`;
}

/** Header values must be one line of visible ASCII. */
function headerSafe(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, "?").slice(0, 1000);
}

function answer(res: ServerResponse, status: number, header: string | undefined, message: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = `${message}\n`;
  res.writeHead(status, {
    "content-type": "text/plain; charset=utf-8",
    "content-length": Buffer.byteLength(body),
    ...(header ? { [header]: headerSafe(message) } : {}),
  });
  res.end(body);
}

function answerRaw(socket: Socket, status: number, reason: string, header: string, message: string): void {
  const body = `${message}\n`;
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
      `${header}: ${headerSafe(message)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

/** Up to `max` at once; the rest wait in arrival order. */
function codedError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

export function createEgressGateway(options: EgressGatewayOptions): EgressGateway {
  const { policy, log } = options;
  const lookup = options.lookup ?? systemLookup;
  const connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
  const idleTimeoutMs = options.idleTimeoutMs ?? 300_000;
  const secureContext = trustedSecureContext(options.caFile);
  // Pools are keyed by the pinned address (and servername for https), so a kept-alive
  // connection is only ever reused for the address that was checked.
  const httpAgent = new http.Agent({ keepAlive: true, maxFreeSockets: 16 });
  const httpsAgent = new https.Agent({ keepAlive: true, maxFreeSockets: 16 });
  const listeners = new Set<GatewayListener>();

  /** Resolve and check; the first allowed address, or the answer to give instead. */
  async function pin(
    identity: GatewayIdentity,
    target: NamedTarget,
    onlyTargets: NamedTarget[] | undefined,
  ): Promise<{ address: string } | { status: 403 | 502; header: string; message: string }> {
    const where = authority(target.host, target.port);
    if (onlyTargets && !onlyTargets.some((t) => t.host.toLowerCase() === target.host.toLowerCase() && t.port === target.port)) {
      const message = `egress denied: ${where} is not reachable from a ${identity.purpose}; it reaches only ${onlyTargets.map((t) => authority(t.host, t.port)).join(", ")}`;
      log.info({ egress: { ...identity, target: where, category: "not-a-target" } }, "egress denied");
      return { status: 403, header: DENIED_HEADER, message };
    }
    // A name an --egress-deny rule names is refused before it is looked up: not even a DNS query.
    const byName = policy.decideByName(target.host, target.port);
    if (!byName.allowed) {
      log.info({ egress: { ...identity, target: where, category: byName.category } }, "egress denied");
      return { status: 403, header: DENIED_HEADER, message: byName.message };
    }
    // A named target behind the operator's proxy: the proxy resolves it (this machine may not).
    if (onlyTargets && viaProxy(options.upstreamProxy, target.host)) {
      const decision = policy.decideByName(target.host, target.port);
      if (!decision.allowed) {
        log.info({ egress: { ...identity, target: where, category: decision.category } }, "egress denied");
        return { status: 403, header: DENIED_HEADER, message: decision.message };
      }
      return { address: target.host };
    }
    try {
      const [first] = await resolveAllowed(policy, lookup, target, { byName: onlyTargets !== undefined });
      return { address: first!.address };
    } catch (error) {
      if (error instanceof EgressDeniedError) {
        log.info({ egress: { ...identity, target: where, category: error.denial.category } }, "egress denied");
        return { status: 403, header: DENIED_HEADER, message: error.message };
      }
      const message = describeUpstreamError(error, target.host, target.port);
      log.debug({ egress: { ...identity, target: where, reason: message } }, "egress upstream failed");
      return { status: 502, header: ERROR_HEADER, message };
    }
  }

  /** Times the TCP connect of a fresh socket; a reused one is already connected. */
  function guardConnect(socket: Socket, fail: (error: Error) => void): void {
    if (!socket.connecting) return;
    const timer = setTimeout(
      () => fail(codedError("EGRESS_CONNECT_TIMEOUT", `timed out after ${Math.round(connectTimeoutMs / 1000)}s`)),
      connectTimeoutMs,
    );
    socket.once("connect", () => clearTimeout(timer));
    socket.once("close", () => clearTimeout(timer));
  }

  async function forward(req: IncomingMessage, res: ServerResponse, identity: GatewayIdentity, onlyTargets: NamedTarget[] | undefined) {
    let url: URL;
    try {
      url = new URL(req.url ?? "");
    } catch {
      answer(
        res,
        400,
        ERROR_HEADER,
        "the Workyard egress gateway takes requests in absolute form (GET https://host/path); the sandbox's fetch and http(s) agents send them so",
      );
      return;
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      answer(res, 400, ERROR_HEADER, `the egress gateway carries http and https only, not ${url.protocol.slice(0, -1)}`);
      return;
    }
    const protocol = url.protocol;
    const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
    const port = Number(url.port) || (protocol === "https:" ? 443 : 80);
    const where = authority(host, port);

    const pinned = await pin(identity, { host, port }, onlyTargets);
    if (!("address" in pinned)) {
      answer(res, pinned.status, pinned.header, pinned.message);
      return;
    }
    const method = req.method ?? "GET";
    let headers = endToEnd(req.headers);
    // The URL's host, whatever the worker's Host header says: the policy decided on this name, and
    // a fronted Host would carry the request (and later its credentials) somewhere else.
    headers.host = url.host;
    if (options.upstreamHeaders) headers = await options.upstreamHeaders({ identity, protocol, host, port, method, headers });
    // The worker may have hung up while we resolved; from here on, its 'close' stops the upstream.
    if (res.closed) return;

    const common = { host: pinned.address, port, method, path: `${url.pathname}${url.search}`, headers, setHost: false };
    const proxy = options.upstreamProxy;
    const upstream = viaProxy(proxy, host)
      ? // Through the operator's proxy: a tunnel to the checked name, TLS (for https) started here.
        // (No agent: with one, Node would ignore createConnection and connect by itself.)
        http.request({
          ...common,
          createConnection: (_options: unknown, done: (error: Error | null, socket?: Socket) => void) => {
            // To the address the policy checked, not the name: the proxy must not resolve it anew.
            connectThroughProxy(proxy, pinned.address, port, connectTimeoutMs).then(
              (socket) =>
                done(
                  null,
                  protocol === "https:"
                    ? tls.connect({ socket, secureContext: secureContext(), servername: isIP(host) === 0 ? host : undefined, checkServerIdentity: (_name, cert) => tls.checkServerIdentity(host, cert) })
                    : socket,
                ),
              (error: Error) => done(error),
            );
            return undefined;
          },
        } as http.RequestOptions)
      : protocol === "https:"
        ? https.request({
            ...common,
            agent: httpsAgent,
            rejectUnauthorized: true,
            // SNI and the certificate check use the requested name, not the pinned address.
            servername: isIP(host) === 0 ? host : "",
            checkServerIdentity: (_pinned, cert) => tls.checkServerIdentity(host, cert),
            // Passed on to tls.connect; the request options' type does not list it.
            ...({ secureContext: secureContext() } as https.RequestOptions),
          })
        : http.request({ ...common, agent: httpAgent });

    await new Promise<void>((resolve) => {
      const fail = (error: Error) => upstream.destroy(error);
      upstream.on("socket", (socket) => guardConnect(socket, fail));
      upstream.setTimeout(idleTimeoutMs, () =>
        fail(codedError("EGRESS_IDLE_TIMEOUT", `sent nothing for ${Math.round(idleTimeoutMs / 1000)}s`)),
      );
      upstream.on("error", (error) => {
        req.unpipe(upstream);
        req.resume();
        const message = describeUpstreamError(error, host, port);
        log.debug({ egress: { ...identity, target: where, reason: message } }, "egress upstream failed");
        answer(res, 502, ERROR_HEADER, message);
        resolve();
      });
      upstream.on("response", (upstreamRes) => {
        res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.statusMessage, endToEnd(upstreamRes.headers));
        upstreamRes.pipe(res);
        upstreamRes.on("error", () => res.destroy());
        upstreamRes.on("aborted", () => res.destroy());
      });
      // The worker went away: stop the upstream too.
      res.once("close", () => {
        if (!res.writableFinished) upstream.destroy();
        resolve();
      });
      req.pipe(upstream);
    });
  }

  function tunnel(req: IncomingMessage, client: Socket, head: Buffer, identity: GatewayIdentity, onlyTargets: NamedTarget[] | undefined) {
    client.on("error", () => client.destroy());
    if (!onlyTargets) {
      answerRaw(
        client,
        403,
        "Forbidden",
        DENIED_HEADER,
        "egress denied: CONNECT is not available to workers; HTTPS goes through the gateway as absolute-form requests (GET https://host/path), which the sandbox's fetch and http(s) agents send",
      );
      log.info({ egress: { ...identity, target: req.url, category: "connect" } }, "egress denied");
      return undefined;
    }
    let target: NamedTarget;
    try {
      const url = new URL(`http://${req.url ?? ""}`);
      if (!url.port || url.pathname !== "/" || url.username) throw new Error("not host:port");
      target = { host: url.hostname.replace(/^\[(.*)\]$/, "$1"), port: Number(url.port) };
    } catch {
      answerRaw(client, 400, "Bad Request", ERROR_HEADER, "CONNECT needs host:port");
      return undefined;
    }
    return (async () => {
      const pinned = await pin(identity, target, onlyTargets);
      if (!("address" in pinned)) {
        answerRaw(client, pinned.status, pinned.status === 403 ? "Forbidden" : "Bad Gateway", pinned.header, pinned.message);
        return;
      }
      if (client.destroyed) return;
      const proxy = options.upstreamProxy;
      let opened: Socket;
      if (viaProxy(proxy, target.host)) {
        try {
          opened = await connectThroughProxy(proxy, target.host, target.port, connectTimeoutMs);
        } catch (error) {
          answerRaw(client, 502, "Bad Gateway", ERROR_HEADER, describeUpstreamError(error, target.host, target.port));
          return;
        }
      } else {
        opened = net.connect({ host: pinned.address, port: target.port });
      }
      await new Promise<void>((resolve) => {
        const upstream = opened;
        let connected = false;
        guardConnect(upstream, (error) => upstream.destroy(error));
        const onConnected = () => {
          connected = true;
          client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
          if (head.length > 0) upstream.write(head);
          upstream.pipe(client);
          client.pipe(upstream);
        };
        if (upstream.connecting) upstream.once("connect", onConnected);
        else onConnected();
        upstream.setTimeout(idleTimeoutMs, () => upstream.destroy());
        upstream.on("error", (error) => {
          if (connected) client.destroy();
          else answerRaw(client, 502, "Bad Gateway", ERROR_HEADER, describeUpstreamError(error, target.host, target.port));
        });
        upstream.on("close", () => {
          if (connected) client.destroy();
          resolve();
        });
        client.on("close", () => upstream.destroy());
      });
    })();
  }

  async function listen(socketPath: string, listenOptions: ListenOptions): Promise<GatewayListener> {
    const { identity, onlyTargets } = listenOptions;
    const slots = new Slots(options.maxConcurrent ?? 64);
    const tunnels = new Set<Socket>();
    const server = http.createServer({ maxHeaderSize: MAX_HEADER_BYTES, headersTimeout: 60_000, requestTimeout: 300_000 });
    // Longer than the clients' reuse window: both Node's agents and undici honour the Keep-Alive hint.
    server.keepAliveTimeout = 30_000;
    // Connections beyond the slots wait for one; this bounds how many may wait.
    server.maxConnections = 256;

    server.on("request", (req, res) => {
      void slots.take().then((release) => {
        res.on("close", release);
        forward(req, res, identity, onlyTargets)
          .catch((error: unknown) => {
            log.info({ egress: { ...identity }, err: error }, "egress gateway request failed");
            answer(res, 502, ERROR_HEADER, "the egress gateway failed to forward the request");
          })
          .finally(release);
      });
    });
    server.on("connect", (req: IncomingMessage, client: Socket, head: Buffer) => {
      tunnels.add(client);
      client.on("close", () => tunnels.delete(client));
      void slots.take().then((release) => {
        const done = tunnel(req, client, head, identity, onlyTargets);
        if (!done) release();
        else void done.catch(() => client.destroy()).finally(release);
      });
    });

    removeStaleSocket(socketPath);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(socketPath, () => {
        server.off("error", reject);
        resolve();
      });
    });
    // The sandboxed process may run as another uid; only a sandbox with the file bound in can reach it.
    fs.chmodSync(socketPath, 0o666);

    let closing: Promise<void> | undefined;
    const listener: GatewayListener = {
      path: socketPath,
      close() {
        closing ??= new Promise<void>((resolve) => {
          listeners.delete(listener);
          server.close(() => resolve());
          server.closeAllConnections();
          for (const socket of tunnels) socket.destroy();
        }).finally(() => fs.rmSync(socketPath, { force: true }));
        return closing;
      },
    };
    listeners.add(listener);
    return listener;
  }

  return {
    listen,
    async close() {
      await Promise.all([...listeners].map((listener) => listener.close()));
      httpAgent.destroy();
      httpsAgent.destroy();
    },
  };
}

/** A socket file left by a crashed server is replaced; any other file at the path is an error. */
function removeStaleSocket(socketPath: string): void {
  let stat: fs.Stats;
  try {
    stat = fs.lstatSync(socketPath);
  } catch {
    return;
  }
  if (!stat.isSocket()) throw new Error(`${socketPath} exists and is not a socket`);
  fs.rmSync(socketPath);
}
