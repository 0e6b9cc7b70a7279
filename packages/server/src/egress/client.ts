import http, { type ClientRequest, type IncomingMessage } from "node:http";
import https from "node:https";
import { createRequire } from "node:module";
import net from "node:net";
import path from "node:path";
import type { Duplex } from "node:stream";
import type { Agent as AgentClass, Dispatcher } from "undici";

/**
 * The worker side of the egress gateway (gateway.ts), run by the sandbox entry before the
 * worker's code loads. The sandbox has no network but the gateway's Unix socket, so every HTTP
 * client is pointed there: Node's fetch through undici's global dispatcher, node:http and
 * node:https through their agents. Requests leave in absolute form (`GET https://host/path`,
 * plain HTTP on the socket: the gateway originates TLS), and the gateway's own refusals come
 * back as errors, the way a network failure would.
 *
 * Bundled into the sandbox entry with esbuild, so it imports nothing of ours: the two header
 * names below are gateway.ts's, and client.test.ts checks they stay equal. undici is not bundled:
 * loading it costs tens of milliseconds, so a worker pays for it on its first fetch only (and a
 * worker that never fetches, never), from the package folder the sandbox mounts beside the entry.
 */

const DENIED_HEADER = "x-workyard-egress-denied";
const ERROR_HEADER = "x-workyard-egress-error";

/** The gateway refused the request (EGRESS_DENIED) or could not reach the upstream (EGRESS_ERROR). */
export class EgressError extends Error {
  constructor(
    message: string,
    readonly code: "EGRESS_DENIED" | "EGRESS_ERROR",
  ) {
    super(message);
    this.name = "EgressError";
  }
}

/** The gateway's own answer, if this is one; upstream answers never carry these headers. */
function gatewayFailure(header: (name: string) => string | undefined): EgressError | undefined {
  const denied = header(DENIED_HEADER);
  if (denied !== undefined) return new EgressError(denied, "EGRESS_DENIED");
  const failed = header(ERROR_HEADER);
  if (failed !== undefined) return new EgressError(failed, "EGRESS_ERROR");
  return undefined;
}

/** `scheme://host[:port]` + path: the request line a forward proxy expects. */
function absoluteUrl(protocol: string, host: string, port: number | undefined, path: string): string {
  const defaultPort = protocol === "https:" ? 443 : 80;
  const name = net.isIP(host) === 6 ? `[${host}]` : host;
  return `${protocol}//${name}${port && port !== defaultPort ? `:${port}` : ""}${path}`;
}

function isAbsolute(path: string): boolean {
  return path.startsWith("http://") || path.startsWith("https://");
}

// ---------------------------------------------------------------------------------------------
// fetch (undici)

type DispatchHeaders = Dispatcher.DispatchOptions["headers"];

/** Headers as the flat [name, value, ...] list undici takes, with Host added when missing. */
function withHost(headers: DispatchHeaders, host: string): (string | string[])[] {
  const flat: (string | string[])[] = [];
  if (Array.isArray(headers)) flat.push(...(headers as string[]));
  else if (headers && typeof (headers as Iterable<unknown>)[Symbol.iterator] === "function") {
    for (const [name, value] of headers as Iterable<[string, string | string[] | undefined]>) if (value !== undefined) flat.push(name, value);
  } else if (headers) {
    for (const [name, value] of Object.entries(headers)) if (value !== undefined) flat.push(name, value);
  }
  const hasHost = flat.some((item, i) => i % 2 === 0 && String(item).toLowerCase() === "host");
  if (!hasHost) flat.push("host", host);
  return flat;
}

/**
 * Passes undici's callbacks through, except for a gateway refusal: its body is read and
 * dropped (the connection stays usable) and the request fails with the gateway's message, so
 * fetch rejects with TypeError("fetch failed", { cause }) as for any network failure.
 */
class GatewayAnswerHandler implements Dispatcher.DispatchHandlers {
  private failure: EgressError | undefined;
  constructor(private readonly handler: Dispatcher.DispatchHandlers) {}

  onConnect(abort: (err?: Error) => void): void {
    this.handler.onConnect?.(abort);
  }
  onError(err: Error): void {
    this.handler.onError?.(err);
  }
  onUpgrade(statusCode: number, headers: Buffer[] | string[] | null, socket: Duplex): void {
    this.handler.onUpgrade?.(statusCode, headers, socket);
  }
  onResponseStarted(): void {
    this.handler.onResponseStarted?.();
  }
  onHeaders(statusCode: number, headers: Buffer[], resume: () => void, statusText: string): boolean {
    if (statusCode >= 400) {
      this.failure = gatewayFailure((wanted) => {
        for (let i = 0; i < headers.length; i += 2) if (String(headers[i]).toLowerCase() === wanted) return String(headers[i + 1]);
        return undefined;
      });
      if (this.failure) return true;
    }
    return this.handler.onHeaders?.(statusCode, headers, resume, statusText) ?? true;
  }
  onData(chunk: Buffer): boolean {
    if (this.failure) return true;
    return this.handler.onData?.(chunk) ?? true;
  }
  onComplete(trailers: string[] | null): void {
    if (this.failure) this.handler.onError?.(this.failure);
    else this.handler.onComplete?.(trailers);
  }
  onBodySent(chunkSize: number, totalBytesSent: number): void {
    this.handler.onBodySent?.(chunkSize, totalBytesSent);
  }
}

/** Every request to the gateway's socket, rewritten to absolute form. */
function gatewayDispatcher(socketPath: string, undiciDir: string): Dispatcher {
  // The agent alone, not undici's index: a third of the load time.
  const Agent = createRequire(import.meta.url)(path.join(undiciDir, "lib", "dispatcher", "agent.js")) as typeof AgentClass;
  const agent = new Agent({ connect: { socketPath } });
  return agent.compose((dispatch) => (options, handler) => {
    const origin = options.origin ? new URL(String(options.origin)) : undefined;
    if (!origin || (origin.protocol !== "http:" && origin.protocol !== "https:") || isAbsolute(options.path)) return dispatch(options, handler);
    return dispatch(
      {
        ...options,
        // One pool for everything: the socket is the same whatever the target.
        origin: "http://workyard-egress",
        path: `${origin.origin}${options.path}`,
        headers: withHost(options.headers, origin.host) as string[],
      },
      new GatewayAnswerHandler(handler),
    );
  });
}

// ---------------------------------------------------------------------------------------------
// node:http and node:https

interface AgentInternals {
  createConnection(options: Record<string, unknown>, callback?: unknown): net.Socket;
  addRequest(req: ClientRequest, options: Record<string, unknown>): void;
}

type RequestInternals = ClientRequest & {
  protocol: string;
  _header?: string | null;
  outputData?: { data: unknown }[];
  outputSize?: number;
};

/**
 * Absolute form for a request an agent is about to send, as proxy agents do: the path is
 * rewritten before the headers are written. When the caller passed headers as an array or
 * `Expect`, Node has already rendered the request line (and, for `Expect`, queued it to send),
 * so it is rewritten there too.
 */
function toAbsoluteForm(req: RequestInternals, options: Record<string, unknown>): void {
  if (isAbsolute(req.path) || req.method === "CONNECT") return;
  const url = absoluteUrl(req.protocol, String(options.host ?? "localhost"), Number(options.port) || undefined, req.path);
  req.path = url;
  const rendered = req._header;
  if (typeof rendered !== "string") return;
  const header = rendered.replace(/^(\S+) \S+/, `$1 ${url}`);
  req._header = header;
  for (const queued of req.outputData ?? []) {
    if (typeof queued.data === "string" && queued.data.startsWith(rendered)) {
      queued.data = header + queued.data.slice(rendered.length);
      if (typeof req.outputSize === "number") req.outputSize += header.length - rendered.length;
    }
  }
}

/** A gateway refusal becomes the request's 'error' instead of its 'response'. */
function failOnGatewayAnswer(req: ClientRequest): void {
  const emit = req.emit;
  req.emit = function (this: ClientRequest, event: string | symbol, ...args: unknown[]): boolean {
    if (event === "response") {
      const res = args[0] as IncomingMessage;
      const failure = (res.statusCode ?? 0) >= 400 ? gatewayFailure((name) => res.headers[name] as string | undefined) : undefined;
      if (failure) {
        res.resume();
        return emit.call(this, "error", failure);
      }
    }
    return emit.call(this, event, ...args);
  } as ClientRequest["emit"];
}

function routeNodeAgents(socketPath: string): void {
  const httpProto = http.Agent.prototype as unknown as AgentInternals;
  const httpsProto = https.Agent.prototype as unknown as AgentInternals;
  const plainCreate = httpProto.createConnection;
  const addRequest = httpProto.addRequest;

  // Every agent, not only the global ones: SDKs that make their own https.Agent (for keep-alive
  // or socket limits) go to the gateway too. TLS settings on those agents have no effect: the
  // gateway verifies upstream certificates itself.
  const createConnection = function (this: AgentInternals, options: Record<string, unknown>, callback?: unknown): net.Socket {
    if (options.socketPath) return plainCreate.call(this, options, callback);
    return net.createConnection({ path: socketPath });
  };
  httpProto.createConnection = createConnection;
  httpsProto.createConnection = createConnection;
  httpProto.addRequest = function (this: AgentInternals, req: ClientRequest, options: Record<string, unknown>): void {
    if (!options.socketPath) {
      toAbsoluteForm(req as RequestInternals, options);
      failOnGatewayAnswer(req);
    }
    addRequest.call(this, req, options);
  };
  // Fresh global agents, so nothing pooled before this point is reused.
  http.globalAgent = new http.Agent({ keepAlive: true });
  https.globalAgent = new https.Agent({ keepAlive: true });
}

let routed: string | undefined;

/**
 * Sends fetch, node:http and node:https through the gateway's socket. Call once, before the
 * worker's code loads.
 */
export function routeThroughGateway(socketPath: string, undiciDir: string): void {
  if (routed !== undefined) {
    if (routed !== socketPath) throw new Error(`egress is already routed through ${routed}`);
    return;
  }
  routed = socketPath;
  // Node's own fetch reads the dispatcher stored under this symbol (undici's setGlobalDispatcher
  // does exactly this; same major, 6). The real one is made on the first request.
  let dispatcher: Dispatcher | undefined;
  const lazy = {
    dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandlers): boolean {
      dispatcher ??= gatewayDispatcher(socketPath, undiciDir);
      return dispatcher.dispatch(options, handler);
    },
    close: () => dispatcher?.close() ?? Promise.resolve(),
    destroy: () => dispatcher?.destroy() ?? Promise.resolve(),
  };
  Object.defineProperty(globalThis, Symbol.for("undici.globalDispatcher.1"), { value: lazy, writable: true, enumerable: false, configurable: false });
  routeNodeAgents(socketPath);
}
