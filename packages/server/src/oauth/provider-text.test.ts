/**
 * Security review, low finding: a provider's error_description reached the terminal raw, and its
 * escape sequences cleared the screen and set the title. Provider text is plain before it is
 * stored or shown: classify.ts (token endpoint answers) and exchange.ts (the redirect's error).
 */
import * as oauth from "oauth4webapi";
import { describe, expect, it } from "vitest";
import { classify, plainText, providerText } from "./classify.js";
import { describeAuthorizationError } from "./exchange.js";

const ESC = "\u001b";
/** Clears the screen, sets the window title (OSC 0, BEL- and ST-terminated), rings the bell, colours. */
const HOSTILE =
  `${ESC}[2J${ESC}[H${ESC}]0;pwned title\u0007${ESC}]2;again${ESC}\\` +
  `\u0007${ESC}[31mred${ESC}[0m text\r\n\tnext line\u0000\u0008\u007f\u009b2J\u009d0;c1 title\u009c${ESC}c${ESC}(B end`;

describe("plainText", () => {
  it("drops escape sequences and control characters, keeps words, newlines and tabs", () => {
    expect(plainText(HOSTILE)).toBe("red text\n\tnext line end");
  });

  it("leaves ordinary text, including non-Latin letters, as it is", () => {
    const text = "L'autorisation a été refusée — 認可が拒否されました (code 42) [see https://example.com/?a=1&b=2]";
    expect(plainText(text)).toBe(text);
  });

  it("drops an unterminated OSC string to the end, as a terminal would swallow it", () => {
    expect(plainText(`before${ESC}]0;title without end`)).toBe("before");
  });

  it("caps the length after cleaning", () => {
    expect(providerText(`${ESC}[2J${"x".repeat(300)}`)).toBe(`${"x".repeat(200)}…`);
    expect(providerText(undefined)).toBe("");
  });
});

describe("classify keeps provider text plain", () => {
  const as: oauth.AuthorizationServer = { issuer: "https://provider.example", token_endpoint: "https://provider.example/token" };
  const client: oauth.Client = { client_id: "client-1" };
  async function errorFor(body: unknown, status: number): Promise<unknown> {
    try {
      await oauth.processRefreshTokenResponse(as, client, new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } }));
    } catch (error) {
      return error;
    }
    throw new Error("oauth4webapi accepted the answer");
  }

  it("in the message built from error_description", async () => {
    const failure = classify(await errorFor({ error: "invalid_grant", error_description: HOSTILE }, 400));
    expect(failure.kind).toBe("reauthorize");
    expect(failure.message).toBe("The provider refused the grant (invalid_grant: red text\n\tnext line end).");
  });

  it("in the error code itself", async () => {
    const failure = classify(await errorFor({ error: `${ESC}]0;title\u0007weird_error${ESC}[2J` }, 400));
    expect(failure.code).toBe("weird_error");
    expect(failure.message).toBe("The provider refused the request (weird_error).");
  });

  it("in a WWW-Authenticate challenge", async () => {
    let error: unknown;
    try {
      await oauth.processRefreshTokenResponse(
        as,
        client,
        new Response("", { status: 401, headers: { "www-authenticate": `Bearer error="invalid_client", error_description="bad ${ESC}[2Jclient"` } }),
      );
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(oauth.WWWAuthenticateChallengeError);
    const failure = classify(error);
    expect(failure.message).toBe("The provider rejected the client credentials (invalid_client: bad client).");
  });
});

describe("describeAuthorizationError keeps the redirect's error plain", () => {
  it("in the description and the code", () => {
    const described = describeAuthorizationError("access_denied", HOSTILE, "http://127.0.0.1:7777/workers/oauth/callback");
    expect(described.message).toBe("Access was denied at the provider (red text\n\tnext line end).");
    const odd = describeAuthorizationError(`${ESC}[2Jtemporarily_unavailable${ESC}]0;t\u0007`, null, "http://127.0.0.1:7777/workers/oauth/callback");
    expect(odd.message).toBe("The provider answered temporarily_unavailable.");
  });

  it("caps a long description", () => {
    const described = describeAuthorizationError("access_denied", "y".repeat(1000), "http://127.0.0.1:7777/workers/oauth/callback");
    expect(described.message).toBe(`Access was denied at the provider (${"y".repeat(200)}…).`);
  });

  it("never shows an empty code", () => {
    expect(describeAuthorizationError(`${ESC}[2J`, null, "http://127.0.0.1:7777/cb").message).toBe("The provider answered an unnamed error.");
  });
});
