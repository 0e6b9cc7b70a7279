import http from "node:http";
import type { AddressInfo } from "node:net";
import Provider from "oidc-provider";

export interface ProviderOptions {
  /** Redirect URIs registered for the client (the Workyard server's callback URL). */
  redirectUris: string[];
  clientId?: string;
  clientSecret?: string;
  /** Access token lifetime in seconds: short, so expiry and refresh happen within a test. */
  accessTokenTtl?: number;
  rotateRefreshToken?: boolean;
  tokenEndpointAuthMethod?: "client_secret_post" | "client_secret_basic";
  issueRefreshTokens?: boolean;
}

export interface TestProvider {
  issuer: string;
  authorizationEndpoint: string;
  tokenEndpoint: string;
  revocationEndpoint: string;
  /** A resource API that accepts only this provider's valid access tokens: GET /api/user/repos. */
  resourceUrl: string;
  /** The status the resource API answers with this token: 200, or 401 once the provider expired it. */
  resourceStatus(token: string): Promise<number>;
  clientId: string;
  clientSecret: string;
  /** Successful and failed token requests so far, by grant type. */
  grants: { success: Record<string, number>; error: Record<string, number> };
  /** Revocation requests (RFC 7009) the provider accepted (answered 200, client authenticated). */
  revocations: number;
  /** Whether a refresh_token grant rotates the refresh token from now on (starts as `rotateRefreshToken`). */
  setRotateRefreshToken(rotate: boolean): void;
  provider: Provider;
  stop(): Promise<void>;
}

/**
 * A real OAuth 2.0 authorization server (oidc-provider from npm) on 127.0.0.1, port 0, with the
 * development login and consent pages, PKCE, refresh tokens and short-lived access tokens; and,
 * on the same port, a resource API that checks bearer tokens against it.
 */
export async function startProvider(options: ProviderOptions): Promise<TestProvider> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const clientId = options.clientId ?? "workyard-test-client";
  const clientSecret = options.clientSecret ?? "workyard-test-secret-canary";
  const rotation = { rotate: options.rotateRefreshToken ?? true };
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        redirect_uris: options.redirectUris,
        grant_types: ["authorization_code", "refresh_token"],
        response_types: ["code"],
        token_endpoint_auth_method: options.tokenEndpointAuthMethod ?? "client_secret_post",
      },
    ],
    ttl: {
      AccessToken: options.accessTokenTtl ?? 30,
      AuthorizationCode: 60,
      RefreshToken: 24 * 3600,
      Grant: 24 * 3600,
      Session: 24 * 3600,
      Interaction: 600,
      IdToken: 3600,
    },
    features: { devInteractions: { enabled: true }, revocation: { enabled: true } },
    scopes: ["openid", "offline_access", "repo", "user", "read"],
    // Refresh tokens without offline_access, as GitHub Apps and most providers issue them.
    issueRefreshToken: async (_ctx, client) => options.issueRefreshTokens !== false && client.grantTypeAllowed("refresh_token"),
    rotateRefreshToken: () => rotation.rotate,
  });
  const grants = { success: {} as Record<string, number>, error: {} as Record<string, number> };
  const count = (bucket: Record<string, number>, ctx: { oidc?: { params?: { grant_type?: unknown } } }) => {
    const type = String(ctx.oidc?.params?.grant_type ?? "unknown");
    bucket[type] = (bucket[type] ?? 0) + 1;
  };
  provider.on("grant.success", (ctx) => count(grants.success, ctx));
  provider.on("grant.error", (ctx) => count(grants.error, ctx));
  // oidc-provider emits no event for a successful revocation (only revocation.error): count the
  // requests to its revocation endpoint that it answered with 200.
  const state = { revocations: 0 };

  const oidc = provider.callback();
  server.on("request", (req, res) => {
    if (req.url?.startsWith("/api/")) {
      void resource(provider, req, res);
      return;
    }
    if (req.method === "POST" && req.url?.split("?")[0] === "/token/revocation") {
      res.on("finish", () => {
        if (res.statusCode === 200) state.revocations += 1;
      });
    }
    oidc(req, res);
  });

  return {
    issuer,
    authorizationEndpoint: `${issuer}/auth`,
    tokenEndpoint: `${issuer}/token`,
    revocationEndpoint: `${issuer}/token/revocation`,
    resourceUrl: `${issuer}/api/user/repos`,
    resourceStatus: (token) => resourceStatus(`${issuer}/api/user/repos`, token),
    clientId,
    clientSecret,
    grants,
    get revocations() {
      return state.revocations;
    },
    setRotateRefreshToken(rotate: boolean) {
      rotation.rotate = rotate;
    },
    provider,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Status of GET resourceUrl with this bearer token (the body read and dropped). */
export async function resourceStatus(resourceUrl: string, token: string): Promise<number> {
  const response = await fetch(resourceUrl, { headers: { authorization: `Bearer ${token}` } });
  await response.arrayBuffer();
  return response.status;
}

/** GET /api/user/repos: 200 with a list for a valid, unexpired access token; 401 otherwise. */
async function resource(provider: Provider, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const header = req.headers.authorization ?? "";
  const token = /^Bearer (.+)$/i.exec(header)?.[1];
  const found = token ? await provider.AccessToken.find(token) : undefined;
  res.setHeader("content-type", "application/json");
  if (!found || found.isExpired) {
    res.statusCode = 401;
    res.end(JSON.stringify({ message: "Bad credentials" }));
    return;
  }
  res.end(JSON.stringify([{ name: "repo-one", owner: found.accountId }, { name: "repo-two", owner: found.accountId }]));
}
