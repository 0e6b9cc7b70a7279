import { isIP } from "node:net";
import { Agent, buildConnector } from "undici";
import { trustedSecureContext } from "./gateway.js";
import { EgressDeniedError, resolveAllowed, systemLookup, type EgressLookup, type EgressPolicy } from "./policy.js";
import { connectThroughProxy, viaProxy, type UpstreamProxy } from "./upstream.js";

/**
 * The server's own outbound HTTP (OAuth token, revocation and discovery endpoints), under the
 * same policy as workers: a worker names these endpoints, so without the check it could make
 * the server knock on 127.0.0.1:5432 for it. Each connection resolves the name, checks the
 * policy on the resolved address and connects to exactly that address; TLS is verified against
 * the name, with the gateway's trust store.
 *
 * Failures must not become a port scanner: describeOutboundFailure folds every network-level
 * failure into one message, so a closed port and an open one that speaks another protocol look
 * the same from outside. A denial keeps its own message (it says nothing about the target).
 */

export interface OutboundOptions {
  /** Extra PEM CA certificates (config `egressCaFile`). */
  caFile?: string;
  lookup?: EgressLookup;
  /** TCP + TLS connect; default 10 s. */
  connectTimeoutMs?: number;
  /** Backstop for a silent peer (callers set their own, shorter, signal); default 30 s. */
  answerTimeoutMs?: number;
  /** The operator's HTTP proxy (CONNECT), used once the policy said yes. */
  upstreamProxy?: UpstreamProxy;
}

export type OutboundFetch = typeof fetch;

/** A fetch whose every connection is checked against the egress policy. */
export function createOutboundFetch(policy: EgressPolicy, options: OutboundOptions = {}): OutboundFetch {
  const lookup = options.lookup ?? systemLookup;
  const timeout = options.connectTimeoutMs ?? 10_000;
  const secureContext = trustedSecureContext(options.caFile);
  // Plain http needs no trusted roots; https builds its connector with them on first use.
  const plainConnector = buildConnector({ timeout });
  let tlsConnector: buildConnector.connector | undefined;
  const connectTo: buildConnector.connector = (target, callback) => {
    if (target.protocol === "https:") return (tlsConnector ??= buildConnector({ timeout, secureContext: secureContext() }))(target, callback);
    // Plain HTTP through the operator's proxy: the tunnel is the connection (undici's connector
    // takes a socket of ours only to start TLS on it).
    if (target.httpSocket) return callback(null, target.httpSocket);
    return plainConnector(target, callback);
  };

  // Connect-time rather than a `lookup` hook: net skips the lookup for IP literals, and those
  // need the check most.
  const connect: buildConnector.connector = (target, callback) => {
    const host = target.hostname.replace(/^\[(.*)\]$/, "$1");
    const port = Number(target.port) || (target.protocol === "https:" ? 443 : 80);
    resolveAllowed(policy, lookup, { host, port }).then(
      ([first]) =>
        viaProxy(options.upstreamProxy, host)
          ? // To the address the policy checked, not the name: the proxy must not resolve it anew.
            connectThroughProxy(options.upstreamProxy, first!.address, port, options.connectTimeoutMs ?? 10_000).then(
              // undici starts TLS (for https) on the tunnel it is handed.
              (httpSocket) => connectTo({ ...target, httpSocket, servername: isIP(host) === 0 ? host : undefined } as Parameters<typeof connectTo>[0], callback),
              (error: Error) => callback(error, null),
            )
          : connectTo(
          {
            ...target,
            hostname: first!.address,
            // SNI and certificate checks on the name; none for an IP literal (checked against the address).
            servername: isIP(host) === 0 ? host : undefined,
          },
          callback,
        ),
      (error: Error) => callback(error, null),
    );
  };
  const answerTimeout = options.answerTimeoutMs ?? 30_000;
  const dispatcher = new Agent({ connect, headersTimeout: answerTimeout, bodyTimeout: answerTimeout });

  // Node's own fetch with our dispatcher (same undici major): it answers with the global
  // Response, which oauth4webapi's instanceof checks expect.
  return ((input: Parameters<typeof fetch>[0], init?: RequestInit) =>
    fetch(input, { ...init, dispatcher } as RequestInit)) as OutboundFetch;
}

export interface OutboundFailure {
  kind: "denied" | "unreachable";
  message: string;
}

/**
 * One message for any failure of an outbound call: refused, reset, timed out, unresolvable,
 * TLS failure, a peer that does not speak HTTP (Redis, PostgreSQL), a hang-up. Only the origin is
 * named (paths and queries may carry more than they should).
 */
export function describeOutboundFailure(error: unknown, url: string | URL): OutboundFailure {
  let current: unknown = error;
  for (let depth = 0; current instanceof Error && depth < 8; depth++) {
    if (current instanceof EgressDeniedError) return { kind: "denied", message: current.message };
    current = current.cause;
  }
  let origin: string;
  try {
    origin = new URL(url).origin;
  } catch {
    origin = String(url);
  }
  return { kind: "unreachable", message: `could not get an HTTP answer from ${origin}` };
}
