import { describe, expect, it } from "vitest";
import { DEFAULT_REFRESH_INTERVAL_MS, KEEP_ALIVE_MS, expiryOf, nextRefreshOf, refreshMargin } from "./expiry.js";

const NOW = Date.UTC(2026, 0, 1, 12, 0, 0);
const MINUTE = 60_000;

describe("refreshMargin: min(5 minutes, half the lifetime)", () => {
  it.each([
    [60 * MINUTE, 5 * MINUTE],
    [10 * MINUTE, 5 * MINUTE],
    [8 * MINUTE, 4 * MINUTE],
    [4_000, 2_000],
    [0, 0],
    [-5_000, 0],
  ])("lifetime %i ms gives %i ms", (lifetime, margin) => {
    expect(refreshMargin(lifetime)).toBe(margin);
  });
});

describe("expiryOf", () => {
  const none = { accessTokenTtlMs: undefined, accessTokenTtlSource: undefined } as const;

  it("uses the provider's expires_in first, even when the worker sets accessTokenExpireMs", () => {
    expect(expiryOf({ expires_in: 3600 }, none, true, NOW)).toEqual({ expiresAt: NOW + 3_600_000, source: "provider" });
    expect(expiryOf({ expires_in: 60 }, { accessTokenTtlMs: 999_000, accessTokenTtlSource: "config" }, false, NOW)).toEqual({ expiresAt: NOW + 60_000, source: "provider" });
  });

  it("no expires_in: the worker's accessTokenExpireMs, source config", () => {
    expect(expiryOf({}, { accessTokenTtlMs: 3_600_000, accessTokenTtlSource: "config" }, true, NOW)).toEqual({ expiresAt: NOW + 3_600_000, source: "config" });
    // Without a refresh token as well: it expires then, and the error will name `oauth start`.
    expect(expiryOf({}, { accessTokenTtlMs: 3_600_000, accessTokenTtlSource: "config" }, false, NOW)).toEqual({ expiresAt: NOW + 3_600_000, source: "config" });
  });

  it("no expires_in: the catalog's lifetime for the provider is the catalog's, not an unknown expiry", () => {
    expect(expiryOf({}, { accessTokenTtlMs: 7_200_000, accessTokenTtlSource: "catalog" }, true, NOW)).toEqual({ expiresAt: NOW + 7_200_000, source: "catalog" });
  });

  it("no expires_in and no configured lifetime, with a refresh token: the default interval, never 'does not expire' (nango#6775)", () => {
    const expiry = expiryOf({}, none, true, NOW);
    expect(expiry).toEqual({ expiresAt: NOW + DEFAULT_REFRESH_INTERVAL_MS, source: "default" });
    expect(expiry.expiresAt).not.toBeNull();
  });

  it("no expires_in, nothing configured, no refresh token (GitHub OAuth apps): does not expire", () => {
    expect(expiryOf({}, none, false, NOW)).toEqual({ expiresAt: null, source: "none" });
  });

  it("ignores a zero, negative or missing expires_in", () => {
    expect(expiryOf({ expires_in: 0 }, none, true, NOW).source).toBe("default");
    expect(expiryOf({ expires_in: -10 }, none, false, NOW)).toEqual({ expiresAt: null, source: "none" });
    expect(expiryOf({ expires_in: undefined }, none, true, NOW).source).toBe("default");
  });
});

describe("nextRefreshOf", () => {
  it("is the expiry less the margin for a refreshable token", () => {
    expect(nextRefreshOf(NOW + 60 * MINUTE, NOW, true)).toBe(NOW + 55 * MINUTE);
    expect(nextRefreshOf(NOW + 4_000, NOW, true)).toBe(NOW + 2_000);
  });

  it("is null without a refresh token or without an expiry", () => {
    expect(nextRefreshOf(NOW + 60 * MINUTE, NOW, false)).toBeNull();
    // A refreshable token that states no expiry is still refreshed on the keep-alive schedule.
    expect(nextRefreshOf(null, NOW, true)).toBe(NOW + KEEP_ALIVE_MS);
  });

  it("the default interval gives a next refresh that oauth status can show", () => {
    const { expiresAt } = expiryOf({}, { accessTokenTtlMs: undefined, accessTokenTtlSource: undefined }, true, NOW);
    expect(nextRefreshOf(expiresAt, NOW, true)).toBe(NOW + DEFAULT_REFRESH_INTERVAL_MS - 5 * MINUTE);
  });
});
