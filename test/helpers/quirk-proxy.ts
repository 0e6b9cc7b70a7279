import http from "node:http";
import type { AddressInfo } from "node:net";

/**
 * How the proxy answers a token request. Rewriting modes forward the request to the provider and
 * change its answer (they combine: `["drop-expires-in", "form"]`); the others answer by themselves
 * and never forward, so the provider sees nothing (a refresh token sent there is not consumed).
 */
export type QuirkMode =
  /** Forward, answer as the provider did. */
  | "pass"
  /**
   * A provider that accepts client_secret_basic only (Notion, Spotify): a request with the secret
   * in the body gets 401 invalid_client without being forwarded; others go on under the other modes.
   */
  | "require-basic"
  /** Forward; the JSON answer becomes application/x-www-form-urlencoded, same status. */
  | "form"
  /** Forward; form-encoded and always 200, errors included (GitHub OAuth apps). */
  | "form-200"
  /** Forward; `expires_in` removed from the answer. */
  | "drop-expires-in"
  /** Forward; `refresh_token` removed from the answer. */
  | "drop-refresh-token"
  /** GitHub's answer to a bad code: 200, form-encoded, `error=bad_verification_code`. */
  | "error-200"
  /** A 500 HTML error page. */
  | "html-500"
  /** 429 with Retry-After (`retryAfterSeconds`, default 120). */
  | "rate-limit"
  /** 200 JSON without `access_token`. */
  | "no-access-token"
  /** 200 application/json that is not JSON. */
  | "invalid-json"
  /** Holds the request for `delayMs` (default 12 s, past the server's 10 s provider timeout), then 504. */
  | "delay"
  /** Closes the connection without an answer. */
  | "reset";

const REWRITING = new Set<QuirkMode>(["pass", "require-basic", "form", "form-200", "drop-expires-in", "drop-refresh-token"]);

export interface ProxiedRequest {
  grantType: string;
  /** The refresh token a refresh_token grant sent. */
  refreshToken: string | undefined;
  /** Client authentication as sent: client_secret in the body (post) or an Authorization: Basic header. */
  clientSecretInBody: boolean;
  basicAuth: boolean;
  /** The modes that applied to this request. */
  modes: QuirkMode[];
  forwarded: boolean;
}

/** What the provider answered to a forwarded request, before any rewriting. */
export interface ProviderAnswer {
  grantType: string;
  status: number;
  accessToken: string | undefined;
  refreshToken: string | undefined;
  expiresIn: number | undefined;
  error: string | undefined;
}

export interface QuirkProxy {
  /** The proxy's origin, `http://127.0.0.1:<port>`. */
  url: string;
  /** What a worker's tokenEndpoint points at: `<url>/token`. */
  tokenEndpoint: string;
  /** Where forwarded requests go (the provider's token endpoint); can be set after start. */
  target: string;
  /** Switches the mode: for every request, or only for one grant type (the others pass through). */
  setMode(
    modes: QuirkMode | QuirkMode[],
    options?: { grantType?: "authorization_code" | "refresh_token"; retryAfterSeconds?: number; delayMs?: number; latencyMs?: number },
  ): void;
  /**
   * Called once the provider answered a forwarded request, before the proxy sends the answer on
   * (a crash test kills the server here: the provider has acted, the server has not heard).
   */
  beforeAnswer: ((answer: ProviderAnswer) => Promise<void> | void) | undefined;
  /** Called once the proxy's answer to a forwarded request is written to the socket. */
  afterAnswer: ((answer: ProviderAnswer) => Promise<void> | void) | undefined;
  /** Token requests received, and those forwarded to the provider. */
  readonly received: number;
  readonly forwarded: number;
  requests: ProxiedRequest[];
  answers: ProviderAnswer[];
  /** The last refresh token the provider issued (from its raw answers). */
  lastIssuedRefreshToken(): string | undefined;
  stop(): Promise<void>;
}

const HTML_500 = `<!DOCTYPE html>
<html><head><title>500 Internal Server Error</title></head>
<body><h1>Internal Server Error</h1><p>The server encountered an internal error and was unable to complete your request.</p></body></html>
`;

function formEncode(body: Record<string, unknown>): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(body)) if (value !== undefined && value !== null) params.set(key, String(value));
  return params.toString();
}

/**
 * An HTTP proxy on 127.0.0.1, port 0, in front of a provider's token endpoint, whose answers a test
 * switches to show one provider quirk at a time (STYLE section 4). Authorization requests do not
 * pass here: only the worker's tokenEndpoint points at the proxy.
 */
export async function startQuirkProxy(options: { target?: string } = {}): Promise<QuirkProxy> {
  let modes: QuirkMode[] = ["pass"];
  let onlyFor: string | undefined;
  let retryAfterSeconds = 120;
  let delayMs = 12_000;
  /** Forwarded requests wait this long first: a provider that takes its time. */
  let latencyMs = 0;
  let received = 0;
  let forwarded = 0;
  const requests: ProxiedRequest[] = [];
  const answers: ProviderAnswer[] = [];
  const held = new Set<{ timer: NodeJS.Timeout; res: http.ServerResponse }>();

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      void handle(req, res, Buffer.concat(chunks)).catch((error: unknown) => {
        if (!res.headersSent) {
          res.statusCode = 599;
          res.setHeader("content-type", "text/plain");
        }
        res.end(`quirk proxy failure: ${(error as Error).message}`);
      });
    });
  });

  async function handle(req: http.IncomingMessage, res: http.ServerResponse, body: Buffer): Promise<void> {
    // Only the token endpoint lives here: discovery (RFC 8414) and the rest find nothing.
    if (req.method !== "POST" || req.url?.split("?")[0] !== "/token") {
      res.writeHead(404, { "content-type": "text/plain" });
      res.end("Not Found\n");
      return;
    }
    received += 1;
    const params = new URLSearchParams(body.toString("utf8"));
    const grantType = params.get("grant_type") ?? "unknown";
    const applied = onlyFor === undefined || onlyFor === grantType ? modes : (["pass"] as QuirkMode[]);
    const record: ProxiedRequest = {
      grantType,
      refreshToken: params.get("refresh_token") ?? undefined,
      clientSecretInBody: params.has("client_secret"),
      basicAuth: /^Basic /i.test(req.headers.authorization ?? ""),
      modes: applied,
      forwarded: false,
    };
    requests.push(record);

    if (applied.includes("require-basic") && !record.basicAuth) {
      res.writeHead(401, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: "invalid_client", error_description: "client authentication must use HTTP Basic (client_secret_basic)" }));
      return;
    }
    const synthetic = applied.find((m) => !REWRITING.has(m));
    if (synthetic) {
      switch (synthetic) {
        case "error-200":
          res.writeHead(200, { "content-type": "application/x-www-form-urlencoded; charset=utf-8" });
          res.end(
            formEncode({
              error: "bad_verification_code",
              error_description: "The code passed is incorrect or expired.",
              error_uri: "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#bad-verification-code",
            }),
          );
          return;
        case "html-500":
          res.writeHead(500, { "content-type": "text/html; charset=utf-8" });
          res.end(HTML_500);
          return;
        case "rate-limit":
          res.writeHead(429, { "content-type": "text/plain; charset=utf-8", "retry-after": String(retryAfterSeconds) });
          res.end("Too Many Requests\n");
          return;
        case "no-access-token":
          res.writeHead(200, { "content-type": "application/json" });
          res.end(JSON.stringify({ token_type: "bearer", scope: "repo user" }));
          return;
        case "invalid-json":
          res.writeHead(200, { "content-type": "application/json" });
          res.end('{"access_token": "unfinished');
          return;
        case "delay": {
          const entry = {
            res,
            timer: setTimeout(() => {
              held.delete(entry);
              if (!res.writableEnded && !res.destroyed) {
                res.writeHead(504, { "content-type": "text/plain" });
                res.end("Gateway Timeout\n");
              }
            }, delayMs),
          };
          held.add(entry);
          return;
        }
        case "reset":
          req.socket.destroy();
          return;
        default:
          throw new Error(`unknown mode ${synthetic}`);
      }
    }

    // Forward to the provider, then rewrite its answer.
    const headers: Record<string, string> = {};
    for (const [key, value] of Object.entries(req.headers)) {
      if (value === undefined || ["host", "content-length", "connection", "transfer-encoding"].includes(key)) continue;
      headers[key] = Array.isArray(value) ? value.join(", ") : value;
    }
    if (latencyMs > 0) await new Promise((resolve) => setTimeout(resolve, latencyMs));
    forwarded += 1;
    record.forwarded = true;
    const upstream = await fetch(proxy.target, { method: "POST", headers, body });
    const text = await upstream.text();
    let json: Record<string, unknown> | undefined;
    try {
      const parsed = JSON.parse(text) as unknown;
      if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) json = parsed as Record<string, unknown>;
    } catch {
      json = undefined;
    }
    const answer: ProviderAnswer = {
      grantType,
      status: upstream.status,
      accessToken: typeof json?.access_token === "string" ? json.access_token : undefined,
      refreshToken: typeof json?.refresh_token === "string" ? json.refresh_token : undefined,
      expiresIn: typeof json?.expires_in === "number" ? json.expires_in : undefined,
      error: typeof json?.error === "string" ? json.error : undefined,
    };
    answers.push(answer);
    if (proxy.beforeAnswer) await proxy.beforeAnswer(answer);
    if (proxy.afterAnswer) {
      const after = proxy.afterAnswer;
      res.once("finish", () => void Promise.resolve(after(answer)).catch(() => {}));
    }
    const outHeaders: Record<string, string> = {};
    for (const name of ["content-type", "cache-control", "pragma", "www-authenticate"]) {
      const value = upstream.headers.get(name);
      if (value) outHeaders[name] = value;
    }
    if (!json) {
      res.writeHead(upstream.status, outHeaders);
      res.end(text);
      return;
    }
    if (applied.includes("drop-expires-in")) delete json.expires_in;
    if (applied.includes("drop-refresh-token")) delete json.refresh_token;
    if (applied.includes("form") || applied.includes("form-200")) {
      outHeaders["content-type"] = "application/x-www-form-urlencoded; charset=utf-8";
      res.writeHead(applied.includes("form-200") ? 200 : upstream.status, outHeaders);
      res.end(formEncode(json));
      return;
    }
    res.writeHead(upstream.status, outHeaders);
    res.end(JSON.stringify(json));
  }

  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const proxy: QuirkProxy = {
    url,
    tokenEndpoint: `${url}/token`,
    target: options.target ?? "",
    setMode(next, opts = {}) {
      modes = Array.isArray(next) ? next : [next];
      onlyFor = opts.grantType;
      retryAfterSeconds = opts.retryAfterSeconds ?? 120;
      delayMs = opts.delayMs ?? 12_000;
      latencyMs = opts.latencyMs ?? 0;
    },
    beforeAnswer: undefined,
    afterAnswer: undefined,
    get received() {
      return received;
    },
    get forwarded() {
      return forwarded;
    },
    requests,
    answers,
    lastIssuedRefreshToken() {
      for (let i = answers.length - 1; i >= 0; i--) if (answers[i]!.refreshToken) return answers[i]!.refreshToken;
      return undefined;
    },
    stop: () =>
      new Promise<void>((resolve) => {
        for (const entry of held) {
          clearTimeout(entry.timer);
          entry.res.destroy();
        }
        held.clear();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return proxy;
}
