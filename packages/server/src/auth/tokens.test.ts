import { describe, expect, it } from "vitest";
import { AppError } from "../errors.js";
import { mintToken, parseExpiresIn, TOKEN_PREFIX } from "./tokens.js";

const DAY = 86_400_000;

describe("parseExpiresIn", () => {
  it.each([
    ["30 days", 30 * DAY],
    ["12h", 12 * 3_600_000],
    ["1 year", 365.25 * DAY],
    ["90d", 90 * DAY],
    ["7", 7 * DAY],
    ["  2 weeks ", 14 * DAY],
  ])("reads %j as a lifetime", (text, expected) => {
    expect(parseExpiresIn(text)).toBe(expected);
  });

  it.each([["never"], ["Never"], ["none"], ["0"], [""], ["  "], [undefined]])("reads %j as no expiry", (text) => {
    expect(parseExpiresIn(text)).toBeNull();
  });

  it.each([["soon"], ["30 parsecs"], ["-5 days"], ["1e999 days"], ["days"]])("rejects %j with a validation error", (text) => {
    let error: unknown;
    try {
      parseExpiresIn(text);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(AppError);
    expect((error as AppError).code).toBe("validation_error");
    expect((error as AppError).status).toBe(400);
    expect((error as AppError).message).toContain(JSON.stringify(text));
    expect((error as AppError).hint).toMatch(/never/);
  });

  // A lifetime that ends past what a Date can hold (year 275760) cannot be stored or shown:
  // CreateToken would store the row and then fail with a 500, and every later ListTokens too.
  it.each([["1000000 years"], ["300000 years"], ["99999999999999"]])("rejects %j, which ends past any representable date", (text) => {
    let error: unknown;
    try {
      const lifetime = parseExpiresIn(text);
      // Accepting it is only right if the expiry can be shown as a date.
      new Date(Date.now() + lifetime!).toISOString();
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(AppError);
    expect((error as AppError).code).toBe("validation_error");
  });
});

describe("mintToken", () => {
  it("mints distinct prefixed tokens and hashes that are not the token", () => {
    const a = mintToken();
    const b = mintToken();
    expect(a.token.startsWith(TOKEN_PREFIX)).toBe(true);
    expect(a.token).not.toBe(b.token);
    expect(a.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(a.hash).not.toContain(a.token.slice(TOKEN_PREFIX.length));
  });
});
