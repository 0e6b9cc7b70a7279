import net from "node:net";
import * as oauth from "oauth4webapi";
import { describe, expect, it } from "vitest";
import { classify, UNREACHABLE } from "./classify.js";

const as: oauth.AuthorizationServer = { issuer: "https://provider.example", token_endpoint: "https://provider.example/token" };
const client: oauth.Client = { client_id: "client-1" };

/** The error oauth4webapi itself throws for a token endpoint answer: the real classes, not look-alikes. */
async function errorFor(body: string, init: { status: number; headers?: Record<string, string> }): Promise<unknown> {
  try {
    await oauth.processRefreshTokenResponse(as, client, new Response(body, { status: init.status, headers: init.headers ?? {} }));
  } catch (error) {
    return error;
  }
  throw new Error("oauth4webapi accepted the answer");
}

const json = { "content-type": "application/json" };

describe("classify: RFC 6749 §5.2 error bodies (ResponseBodyError)", () => {
  it("invalid_grant means re-authorization, with the provider's description", async () => {
    const error = await errorFor(JSON.stringify({ error: "invalid_grant", error_description: "grant request is invalid" }), { status: 400, headers: json });
    expect(error).toBeInstanceOf(oauth.ResponseBodyError);
    expect(classify(error)).toEqual({
      kind: "reauthorize",
      code: "invalid_grant",
      message: "The provider refused the grant (invalid_grant: grant request is invalid).",
      retryAfterMs: undefined,
    });
  });

  it.each(["invalid_client", "unauthorized_client"])("%s is a configuration error about the client credentials", async (code) => {
    const error = await errorFor(JSON.stringify({ error: code }), { status: code === "invalid_client" ? 401 : 400, headers: json });
    expect(error).toBeInstanceOf(oauth.ResponseBodyError);
    const failure = classify(error);
    expect(failure.kind).toBe("configuration");
    expect(failure.code).toBe(code);
    expect(failure.message).toBe(`The provider rejected the client credentials (${code}).`);
  });

  it("other 4xx codes (invalid_scope, invalid_request) are configuration, never re-authorization", async () => {
    for (const code of ["invalid_scope", "invalid_request", "unsupported_grant_type"]) {
      const failure = classify(await errorFor(JSON.stringify({ error: code, error_description: "nope" }), { status: 400, headers: json }));
      expect(failure).toMatchObject({ kind: "configuration", code, message: `The provider refused the request (${code}: nope).` });
    }
  });

  it("a 429 with an error body is transient and keeps the Retry-After", async () => {
    const error = await errorFor(JSON.stringify({ error: "slow_down" }), { status: 429, headers: { ...json, "retry-after": "120" } });
    expect(error).toBeInstanceOf(oauth.ResponseBodyError);
    expect(classify(error)).toMatchObject({ kind: "transient", code: "slow_down", retryAfterMs: 120_000 });
    expect(classify(error).message).toContain("HTTP 429");
  });

  it("a Retry-After given as an HTTP date becomes the time until then", async () => {
    const at = new Date(Date.now() + 90_000).toUTCString();
    const failure = classify(await errorFor(JSON.stringify({ error: "temporarily_unavailable" }), { status: 429, headers: { ...json, "retry-after": at } }));
    expect(failure.kind).toBe("transient");
    expect(failure.retryAfterMs).toBeGreaterThan(80_000);
    expect(failure.retryAfterMs).toBeLessThanOrEqual(90_000);
  });

  it("cuts a long error_description so a provider cannot flood logs and pages", async () => {
    const failure = classify(await errorFor(JSON.stringify({ error: "invalid_grant", error_description: "x".repeat(5000) }), { status: 400, headers: json }));
    expect(failure.message.length).toBeLessThan(300);
    expect(failure.message).toContain("…");
  });

  it("shows only error and error_description, never other fields of the body", async () => {
    const body = { error: "invalid_grant", error_description: "expired", refresh_token: "canary-refresh-in-error-body", debug: "canary-debug" };
    const failure = classify(await errorFor(JSON.stringify(body), { status: 400, headers: json }));
    expect(JSON.stringify(failure)).not.toContain("canary");
  });
});

describe("classify: answers that are not RFC 6749 (OperationProcessingError) are transient", () => {
  it("an HTML error page with 500", async () => {
    const error = await errorFor("<html><body><h1>Internal Server Error</h1></body></html>", { status: 500, headers: { "content-type": "text/html" } });
    expect(error).toBeInstanceOf(oauth.OperationProcessingError);
    const failure = classify(error);
    expect(failure).toMatchObject({ kind: "transient", code: undefined });
    expect(failure.message).toContain("HTTP 500");
    expect(failure.message).not.toContain("<html>");
  });

  it("an HTML page with 200 is reported as not JSON", async () => {
    const error = await errorFor("<html>Sign in</html>", { status: 200, headers: { "content-type": "text/html" } });
    expect((error as oauth.OperationProcessingError).code).toBe(oauth.RESPONSE_IS_NOT_JSON);
    expect(classify(error)).toEqual({
      kind: "transient",
      code: undefined,
      message: "The provider sent an answer that is not JSON (an error page?) with HTTP 200.",
      retryAfterMs: undefined,
    });
  });

  it("a 429 without a JSON body still honours Retry-After", async () => {
    const error = await errorFor("Too Many Requests", { status: 429, headers: { "content-type": "text/plain", "retry-after": "30" } });
    expect(error).toBeInstanceOf(oauth.OperationProcessingError);
    expect(classify(error)).toMatchObject({ kind: "transient", retryAfterMs: 30_000 });
  });

  it("a 200 without access_token", async () => {
    const error = await errorFor(JSON.stringify({ token_type: "bearer" }), { status: 200, headers: json });
    expect((error as oauth.OperationProcessingError).code).toBe(oauth.INVALID_RESPONSE);
    expect(classify(error)).toMatchObject({ kind: "transient", message: "The provider sent an answer without a usable access token." });
  });

  it("a 200 whose JSON does not parse", async () => {
    const error = await errorFor('{"access_token": "unfinished', { status: 200, headers: json });
    expect(error).toBeInstanceOf(oauth.OperationProcessingError);
    const failure = classify(error);
    expect(failure.kind).toBe("transient");
    expect(failure.message).toMatch(/^The provider sent an unexpected answer/);
  });
});

describe("classify: no answer at all is transient, in one message whatever the cause (not a port scanner)", () => {
  it("a timeout (AbortSignal.timeout)", async () => {
    const signal = AbortSignal.timeout(1);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(classify(signal.reason)).toEqual({ kind: "transient", code: undefined, message: UNREACHABLE, retryAfterMs: undefined });
  });

  it("a refused connection and an open port that does not speak HTTP read the same", async () => {
    // A port that was free a moment ago: nothing listens there.
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
    const { port } = probe.address() as net.AddressInfo;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const refused = await fetch(`http://127.0.0.1:${port}/token`, { method: "POST" }).catch((e: unknown) => e);
    // A service on an open port that answers in its own protocol (as Redis or PostgreSQL would).
    const other = net.createServer((socket) => socket.end("-ERR unknown command\r\n", () => socket.destroy()));
    await new Promise<void>((resolve) => other.listen(0, "127.0.0.1", resolve));
    const garbage = await fetch(`http://127.0.0.1:${(other.address() as net.AddressInfo).port}/token`, { method: "POST" }).catch((e: unknown) => e);
    other.close();
    expect(classify(refused)).toEqual({ kind: "transient", code: undefined, message: UNREACHABLE, retryAfterMs: undefined });
    expect(classify(garbage)).toEqual(classify(refused));
  });
});

describe("classify: a 401 with a WWW-Authenticate challenge (client_secret_basic)", () => {
  // RFC 6749 §5.2: a client that authenticated with the Authorization header gets 401 with
  // WWW-Authenticate. oidc-provider does exactly that for a wrong client_secret_basic secret, and
  // oauth4webapi then throws WWWAuthenticateChallengeError instead of ResponseBodyError.
  it("is the client credentials being rejected (configuration), not an unreachable provider", async () => {
    const error = await errorFor(JSON.stringify({ error: "invalid_client", error_description: "client authentication failed" }), {
      status: 401,
      headers: { ...json, "www-authenticate": 'Basic realm="https://provider.example", error="invalid_client", error_description="client authentication failed"' },
    });
    expect(error).toBeInstanceOf(oauth.WWWAuthenticateChallengeError);
    const failure = classify(error);
    expect(failure.kind).toBe("configuration");
    expect(failure.message).toContain("rejected the client credentials");
  });
});
