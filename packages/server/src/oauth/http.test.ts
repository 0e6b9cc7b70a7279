import * as oauth from "oauth4webapi";
import { describe, expect, it } from "vitest";
import { classify } from "./classify.js";
import { normaliseTokenResponse, requestOptions, PROVIDER_TIMEOUT_MS } from "./http.js";
import type { ProviderQuirks } from "./providers/load.js";
import type { OAuthSettings } from "./settings.js";

function settingsWith(quirks?: Partial<ProviderQuirks>, tokenEndpoint = "https://provider.example/token"): OAuthSettings {
  return {
    key: "githubAuth",
    name: "github-oauth",
    envKey: "OAUTH_X_ACCESS_TOKEN",
    authorizationEndpoint: new URL("https://provider.example/authorize"),
    tokenEndpoint: new URL(tokenEndpoint),
    scope: "repo",
    clientId: "client-1",
    clientSecret: "secret-1",
    authorizationParams: {},
    redirectUri: "http://127.0.0.1:7777/workers/oauth/callback",
    accessTokenTtlMs: undefined,
    accessTokenTtlSource: undefined,
    tokenAuthMethod: "post",
    pkce: true,
    extraTokenParams: {},
    revocationEndpoint: undefined,
    quirks: quirks ? { name: "test", match: ["https://provider.example"], ...quirks } : undefined,
    providerTimeoutMs: PROVIDER_TIMEOUT_MS,
    fetch,
  };
}

const as: oauth.AuthorizationServer = { issuer: "https://provider.example", token_endpoint: "https://provider.example/token" };
const client: oauth.Client = { client_id: "client-1" };

async function bodyOf(response: Response): Promise<unknown> {
  return JSON.parse(await response.text());
}

describe("normaliseTokenResponse", () => {
  it("reads a 2xx form-encoded answer (GitHub) as JSON, for every provider, expires_in as a number", async () => {
    const raw = new Response("access_token=gho_abc&token_type=bearer&scope=repo%2Cuser&expires_in=28800&refresh_token=ghr_def", {
      status: 200,
      headers: { "content-type": "application/x-www-form-urlencoded; charset=utf-8" },
    });
    const normalised = await normaliseTokenResponse(raw, settingsWith());
    expect(normalised.status).toBe(200);
    expect(normalised.headers.get("content-type")).toBe("application/json");
    expect(await bodyOf(normalised)).toEqual({ access_token: "gho_abc", token_type: "bearer", scope: "repo,user", expires_in: 28800, refresh_token: "ghr_def" });
  });

  it("what it produces is accepted by oauth4webapi", async () => {
    const raw = new Response("access_token=gho_abc&token_type=bearer", { status: 200, headers: { "content-type": "application/x-www-form-urlencoded" } });
    const answer = await oauth.processRefreshTokenResponse(as, client, await normaliseTokenResponse(raw, settingsWith()));
    expect(answer.access_token).toBe("gho_abc");
  });

  it("a 200 carrying error=... in a form body is the error it is (400), classified by its code", async () => {
    const raw = new Response("error=bad_refresh_token&error_description=The+refresh+token+passed+is+incorrect+or+expired.", {
      status: 200,
      headers: { "content-type": "application/x-www-form-urlencoded" },
    });
    const normalised = await normaliseTokenResponse(raw, settingsWith({ tokenResponseFormat: "form" }));
    expect(normalised.status).toBe(400);
    expect(await normalised.clone().json()).toEqual({ error: "bad_refresh_token", error_description: "The refresh token passed is incorrect or expired." });
    const error = await oauth.processRefreshTokenResponse(as, client, normalised).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(oauth.ResponseBodyError);
    expect((error as oauth.ResponseBodyError).error).toBe("bad_refresh_token");
  });

  it("a 200 with invalid_grant in a form body marks re-authorization", async () => {
    const raw = new Response("error=invalid_grant&error_description=revoked", { status: 200, headers: { "content-type": "application/x-www-form-urlencoded" } });
    const error = await oauth.processRefreshTokenResponse(as, client, await normaliseTokenResponse(raw, settingsWith())).catch((e: unknown) => e);
    expect(classify(error).kind).toBe("reauthorize");
  });

  it("a 200 JSON answer with an error and no access_token becomes 400 too", async () => {
    const raw = new Response(JSON.stringify({ error: "invalid_client" }), { status: 200, headers: { "content-type": "application/json" } });
    expect((await normaliseTokenResponse(raw, settingsWith())).status).toBe(400);
  });

  it("leaves a 200 that has both an access_token and a stray error field a success", async () => {
    const raw = new Response(JSON.stringify({ access_token: "at", token_type: "bearer", error: "" }), { status: 200, headers: { "content-type": "application/json" } });
    expect((await normaliseTokenResponse(raw, settingsWith())).status).toBe(200);
  });

  it("a form-looking text/plain answer is read as form only where the catalog says tokenResponseFormat: form", async () => {
    const text = "access_token=gho_abc&token_type=bearer";
    const withQuirk = await normaliseTokenResponse(new Response(text, { status: 200, headers: { "content-type": "text/plain" } }), settingsWith({ tokenResponseFormat: "form" }));
    expect(await bodyOf(withQuirk)).toEqual({ access_token: "gho_abc", token_type: "bearer" });
    const without = await normaliseTokenResponse(new Response(text, { status: 200, headers: { "content-type": "text/plain" } }), settingsWith());
    expect(await without.text()).toBe(text);
    expect(without.headers.get("content-type")).toBe("text/plain");
  });

  it("drops id_token (its issuer cannot be checked; connections do not use identity)", async () => {
    const raw = new Response(JSON.stringify({ access_token: "at", token_type: "bearer", id_token: "eyJ.x.y" }), { status: 200, headers: { "content-type": "application/json" } });
    expect(await bodyOf(await normaliseTokenResponse(raw, settingsWith()))).toEqual({ access_token: "at", token_type: "bearer" });
  });

  it("passes an HTML error page through unchanged, status and all, for oauth4webapi to report", async () => {
    const html = "<html><body>Bad gateway</body></html>";
    const normalised = await normaliseTokenResponse(new Response(html, { status: 502, headers: { "content-type": "text/html" } }), settingsWith());
    expect(normalised.status).toBe(502);
    expect(normalised.headers.get("content-type")).toBe("text/html");
    expect(await normalised.text()).toBe(html);
  });

  it("passes JSON that does not parse through unchanged", async () => {
    const normalised = await normaliseTokenResponse(new Response('{"access_token": "unfin', { status: 200, headers: { "content-type": "application/json" } }), settingsWith());
    expect(await normalised.text()).toBe('{"access_token": "unfin');
  });

  it("keeps other headers (Retry-After) and drops a stale content-length", async () => {
    const raw = new Response("error=slow_down", { status: 429, headers: { "content-type": "application/x-www-form-urlencoded", "retry-after": "7", "content-length": "15" } });
    const normalised = await normaliseTokenResponse(raw, settingsWith());
    expect(normalised.status).toBe(429);
    expect(normalised.headers.get("retry-after")).toBe("7");
    expect(normalised.headers.get("content-length")).toBeNull();
  });

  it("leaves a JSON array alone (not a token answer)", async () => {
    const normalised = await normaliseTokenResponse(new Response("[1,2]", { status: 200, headers: { "content-type": "application/json" } }), settingsWith());
    expect(await normalised.text()).toBe("[1,2]");
  });
});

describe("requestOptions", () => {
  it("carries a timeout and the catalog's extra token params; plain http only for an http endpoint", () => {
    const options = requestOptions({ ...settingsWith(), extraTokenParams: { audience: "api" } }, { resource: "r" });
    expect(options.signal).toBeInstanceOf(AbortSignal);
    expect(PROVIDER_TIMEOUT_MS).toBe(10_000);
    expect(options.additionalParameters).toEqual({ audience: "api", resource: "r" });
    expect(options[oauth.allowInsecureRequests]).toBeUndefined();
    const loopback = settingsWith(undefined, "http://127.0.0.1:9/token");
    expect(requestOptions(loopback)[oauth.allowInsecureRequests]).toBe(true);
  });
});
