import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Ajv } from "ajv";
import { afterAll, describe, expect, it } from "vitest";
import YAML from "yaml";
import { resolveSettings } from "../settings.js";
import { CatalogError, loadCatalog, parseCatalog, quirksFor, type ProviderQuirks } from "./load.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const schema = JSON.parse(fs.readFileSync(path.join(here, "schema.json"), "utf8")) as object;
const catalogText = fs.readFileSync(path.join(here, "catalog.yaml"), "utf8");

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "wy-catalog-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe("the built-in catalog", () => {
  it("conforms to schema.json (checked here with Ajv directly, as CI does)", () => {
    const validate = new Ajv({ allErrors: true }).compile(schema);
    const valid = validate(YAML.parse(catalogText));
    expect(validate.errors ?? []).toEqual([]);
    expect(valid).toBe(true);
  });

  it("loads through parseCatalog and loadCatalog, names unique, every entry with docs over https", async () => {
    const entries = parseCatalog(catalogText, schema);
    expect(entries.length).toBeGreaterThan(0);
    expect(new Set(entries.map((e) => e.name)).size).toBe(entries.length);
    for (const entry of entries) expect(entry.docs).toMatch(/^https:\/\//);
    expect((await loadCatalog()).map((e) => e.name)).toEqual(entries.map((e) => e.name));
  });

  it("only uses the documented quirk keys", () => {
    const keys = new Set(parseCatalog(catalogText, schema).flatMap((e) => Object.keys(e)));
    const allowed = ["name", "docs", "match", "tokenAuthMethod", "tokenResponseFormat", "defaultAccessTokenTtlMs", "scopeSeparator", "pkce", "extraAuthorizeParams", "extraTokenParams", "revocationEndpoint"];
    for (const key of keys) expect(allowed).toContain(key);
  });
});

describe("parseCatalog rejects what the schema forbids", () => {
  it("an unknown key, naming the entry and the key", () => {
    const text = "providers:\n  - name: acme\n    match: ['https://auth.acme.test']\n    tokenAuthMetod: basic\n";
    expect(() => parseCatalog(text, schema)).toThrow(CatalogError);
    expect(() => parseCatalog(text, schema)).toThrow(/\/providers\/0/);
    expect(() => parseCatalog(text, schema)).toThrow(/tokenAuthMetod/);
  });

  it("a bad value, a bad match pattern, a missing match, a top-level stray key", () => {
    const bad = [
      "providers:\n  - name: acme\n    match: ['https://auth.acme.test']\n    tokenAuthMethod: digest\n",
      "providers:\n  - name: acme\n    match: ['https://auth.acme.test/oauth/token']\n",
      "providers:\n  - name: acme\n",
      "providers: []\nextra: 1\n",
      "providers:\n  - name: acme\n    match: ['https://auth.acme.test']\n    revocationEndpoint: http://auth.acme.test/revoke\n",
    ];
    for (const text of bad) expect(() => parseCatalog(text, schema), text).toThrow(CatalogError);
  });

  it("a name listed twice", () => {
    const text = "providers:\n  - name: acme\n    match: ['https://a.test']\n  - name: acme\n    match: ['https://b.test']\n";
    expect(() => parseCatalog(text, schema)).toThrow("lists acme twice");
  });
});

describe("loadCatalog with an operator's file", () => {
  it("puts its entries first and replaces a built-in entry of the same name", async () => {
    const file = path.join(tmp, "extra.yaml");
    fs.writeFileSync(file, "providers:\n  - name: github\n    match: ['https://github.com']\n    tokenAuthMethod: basic\n  - name: acme\n    match: ['http://127.0.0.1:4567']\n    tokenAuthMethod: basic\n");
    const catalog = await loadCatalog(file);
    expect(catalog[0]!.name).toBe("github");
    expect(catalog.filter((e) => e.name === "github")).toHaveLength(1);
    expect(quirksFor("https://github.com/login/oauth/access_token", catalog)?.tokenAuthMethod).toBe("basic");
    expect(quirksFor("http://127.0.0.1:4567/token", catalog)?.name).toBe("acme");
  });

  it("throws CatalogError for an invalid file", async () => {
    const file = path.join(tmp, "bad.yaml");
    fs.writeFileSync(file, "providers:\n  - name: acme\n    match: ['https://auth.acme.test']\n    tokenEndpointAuth: basic\n");
    await expect(loadCatalog(file)).rejects.toThrow(CatalogError);
  });
});

describe("quirksFor: matching by the token endpoint's origin", () => {
  const catalog = parseCatalog(catalogText, schema);

  it("matches an exact origin, whatever the path", () => {
    expect(quirksFor("https://github.com/login/oauth/access_token", catalog)?.name).toBe("github");
    expect(quirksFor("https://oauth2.googleapis.com/token", catalog)?.name).toBe("google");
  });

  it("an exact pattern does not match another scheme, port or host", () => {
    expect(quirksFor("http://github.com/login/oauth/access_token", catalog)).toBeUndefined();
    expect(quirksFor("https://github.com:8443/login/oauth/access_token", catalog)).toBeUndefined();
    expect(quirksFor("https://api.github.com/token", catalog)).toBeUndefined();
    expect(quirksFor("https://github.com.evil.test/token", catalog)).toBeUndefined();
  });

  it("a *. pattern matches subdomains at any depth, never the bare domain or a look-alike", () => {
    expect(quirksFor("https://acme.zendesk.com/oauth/tokens", catalog)?.name).toBe("zendesk");
    expect(quirksFor("https://eu.acme.zendesk.com/oauth/tokens", catalog)?.name).toBe("zendesk");
    expect(quirksFor("https://acme.my.salesforce.com/services/oauth2/token", catalog)?.name).toBe("salesforce");
    expect(quirksFor("https://zendesk.com/oauth/tokens", catalog)).toBeUndefined();
    expect(quirksFor("https://evilzendesk.com/oauth/tokens", catalog)).toBeUndefined();
    expect(quirksFor("https://zendesk.com.evil.test/oauth/tokens", catalog)).toBeUndefined();
    expect(quirksFor("http://acme.zendesk.com/oauth/tokens", catalog)).toBeUndefined();
    expect(quirksFor("https://acme.zendesk.com:444/oauth/tokens", catalog)).toBeUndefined();
  });

  it("matches loopback origins with their port (operators' catalogs for local providers)", () => {
    const local: ProviderQuirks[] = [{ name: "local", match: ["http://127.0.0.1:4567"], tokenAuthMethod: "basic" }];
    expect(quirksFor("http://127.0.0.1:4567/token", local)?.name).toBe("local");
    expect(quirksFor("http://127.0.0.1:4568/token", local)).toBeUndefined();
  });

  it("answers undefined for something that is not a URL", () => {
    expect(quirksFor("not a url", catalog)).toBeUndefined();
  });
});

describe("catalog quirks reach the settings; the worker's options win", () => {
  const context = (catalog: ProviderQuirks[]) => ({ publicUrl: "http://127.0.0.1:7777", allowInsecure: false, catalog });
  const capability = (config: Record<string, unknown>) => ({
    _tag: "oauth",
    key: "k",
    config: { name: "n", authorizationEndpoint: "https://acme.zendesk.com/oauth/authorizations/new", tokenEndpoint: "https://acme.zendesk.com/oauth/tokens", clientId: "id", clientSecret: "s", ...config },
  });
  const catalog = parseCatalog(catalogText, schema);

  it("the catalog's default lifetime, unless the worker sets accessTokenExpireMs", () => {
    expect(resolveSettings(capability({}), context(catalog))).toMatchObject({ accessTokenTtlMs: 1_800_000, accessTokenTtlSource: "catalog" });
    expect(resolveSettings(capability({ accessTokenExpireMs: 60_000 }), context(catalog))).toMatchObject({ accessTokenTtlMs: 60_000, accessTokenTtlSource: "config" });
  });

  it("post by default, basic where the catalog says so", () => {
    expect(resolveSettings(capability({}), context(catalog)).tokenAuthMethod).toBe("post");
    const basic: ProviderQuirks[] = [{ name: "z", match: ["https://*.zendesk.com"], tokenAuthMethod: "basic" }];
    expect(resolveSettings(capability({}), context(basic)).tokenAuthMethod).toBe("basic");
  });

  it("the catalog's authorize params are added, the worker's own win", () => {
    const google = {
      _tag: "oauth",
      key: "g",
      config: {
        name: "g",
        authorizationEndpoint: "https://accounts.google.com/o/oauth2/v2/auth",
        tokenEndpoint: "https://oauth2.googleapis.com/token",
        authorizationParams: { prompt: "select_account" },
      },
    };
    expect(resolveSettings(google, context(catalog)).authorizationParams).toEqual({ access_type: "offline", prompt: "select_account" });
  });
});
