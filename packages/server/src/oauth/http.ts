import * as oauth from "oauth4webapi";
import type { OAuthSettings } from "./settings.js";

/** How long a token endpoint gets to answer, by default (`--provider-timeout`); the refresh lease outlives it (lease.ts). */
export const PROVIDER_TIMEOUT_MS = 10_000;

/**
 * oauth4webapi wants authorization-server metadata; workers name only two endpoints, so the
 * server is described by them. The issuer is the token endpoint's origin (nothing here checks
 * id tokens: see normaliseTokenResponse).
 */
export function authorizationServer(settings: OAuthSettings): oauth.AuthorizationServer {
  return {
    issuer: settings.tokenEndpoint.origin,
    authorization_endpoint: settings.authorizationEndpoint.href,
    token_endpoint: settings.tokenEndpoint.href,
    ...(settings.revocationEndpoint ? { revocation_endpoint: settings.revocationEndpoint.href } : {}),
  };
}

export function client(settings: OAuthSettings): oauth.Client {
  return { client_id: settings.clientId };
}

/**
 * Client authentication at the token endpoint: client_secret_post by default; client_secret_basic
 * where the catalog says so.
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-2.3.1
 */
export function clientAuth(settings: OAuthSettings): oauth.ClientAuth {
  return settings.tokenAuthMethod === "basic" ? oauth.ClientSecretBasic(settings.clientSecret) : oauth.ClientSecretPost(settings.clientSecret);
}

/**
 * What real providers send, made into what RFC 6749 describes before oauth4webapi reads it:
 * form-encoded answers (GitHub) become JSON, for every provider; a 2xx whose body carries an
 * `error` (GitHub again) becomes a 400 so it is read as the error it is; `id_token` is dropped
 * (connections do not use identity, and an issuer we cannot know would fail its checks).
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-5.1
 */
export async function normaliseTokenResponse(response: Response, settings: OAuthSettings): Promise<Response> {
  const type = response.headers.get("content-type") ?? "";
  const text = await response.text();
  let body: Record<string, unknown> | undefined;
  if (/json/i.test(type)) {
    try {
      body = JSON.parse(text) as Record<string, unknown>;
    } catch {
      body = undefined;
    }
  }
  const formLike = /^[\w.~%-]+=[^&]*(&[\w.~%-]+=[^&]*)*$/.test(text.trim());
  if (!body && (/x-www-form-urlencoded/i.test(type) || (settings.quirks?.tokenResponseFormat === "form" && formLike))) {
    body = {};
    for (const [k, v] of new URLSearchParams(text.trim())) body[k] = k === "expires_in" && /^\d+$/.test(v) ? Number(v) : v;
  }
  if (!body || typeof body !== "object" || Array.isArray(body)) {
    // An HTML page or other text: let oauth4webapi report it as not JSON.
    return new Response(text, { status: response.status, statusText: response.statusText, headers: response.headers });
  }
  let status = response.status;
  if (status >= 200 && status < 300 && typeof body.error === "string" && body.access_token === undefined) status = 400;
  delete body.id_token;
  const headers = new Headers(response.headers);
  headers.set("content-type", "application/json");
  // With an RFC 6749 error body at hand, the body says more than a Basic challenge.
  if (typeof body.error === "string") headers.delete("www-authenticate");
  headers.delete("content-length");
  headers.delete("content-encoding");
  return new Response(JSON.stringify(body), { status, statusText: response.statusText, headers });
}

/** Options for every token-endpoint request: the normalising fetch, a timeout, http where allowed. */
export function requestOptions(settings: OAuthSettings, extra: Record<string, string> = {}): oauth.TokenEndpointRequestOptions {
  const options: oauth.TokenEndpointRequestOptions = {
    [oauth.customFetch]: async (url: string, init: oauth.CustomFetchOptions<string, unknown>) =>
      normaliseTokenResponse(await settings.fetch(url, init as RequestInit), settings),
    signal: AbortSignal.timeout(settings.providerTimeoutMs),
  };
  const params = { ...settings.extraTokenParams, ...extra };
  if (Object.keys(params).length > 0) options.additionalParameters = params;
  if (settings.tokenEndpoint.protocol === "http:") options[oauth.allowInsecureRequests] = true;
  return options;
}
