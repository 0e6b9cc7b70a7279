import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Ajv } from "ajv";
import YAML from "yaml";

/** The quirks a catalog entry may add; each is implemented once, generically, in oauth/. */
export interface ProviderQuirks {
  name: string;
  docs?: string;
  match: string[];
  tokenAuthMethod?: "basic" | "post";
  tokenResponseFormat?: "json" | "form";
  defaultAccessTokenTtlMs?: number;
  scopeSeparator?: string;
  pkce?: "S256" | "none";
  extraAuthorizeParams?: Record<string, string>;
  extraTokenParams?: Record<string, string>;
  revocationEndpoint?: string;
}

// The data files stay in src; dist/oauth/providers/load.js and src/oauth/providers/load.ts are at
// the same depth, so one relative path reaches them from both.
const DATA_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../src/oauth/providers");

export class CatalogError extends Error {}

/** Parses and checks a catalog: unknown keys, bad values and duplicate names are errors. */
export function parseCatalog(yamlText: string, schema: object): ProviderQuirks[] {
  const data = YAML.parse(yamlText) as unknown;
  const ajv = new Ajv({ allErrors: true });
  const validate = ajv.compile(schema);
  if (!validate(data)) {
    const problems = (validate.errors ?? []).map((e) => `${e.instancePath || "/"} ${e.message ?? ""}`.trim());
    throw new CatalogError(`The OAuth provider catalog is invalid: ${problems.join("; ")}`);
  }
  const providers = (data as { providers: ProviderQuirks[] }).providers;
  const names = new Set<string>();
  for (const provider of providers) {
    if (names.has(provider.name)) throw new CatalogError(`The OAuth provider catalog lists ${provider.name} twice.`);
    names.add(provider.name);
  }
  return providers;
}

const cached = new Map<string, ProviderQuirks[]>();

/**
 * The built-in catalog, with an operator's own entries first when `extraFile` names one (same
 * format, same schema): quirks for a provider Workyard does not know, without a fork.
 */
export function loadCatalog(extraFile?: string): ProviderQuirks[] {
  const key = extraFile ?? "";
  let catalog = cached.get(key);
  if (!catalog) {
    const schema = JSON.parse(fs.readFileSync(path.join(DATA_DIR, "schema.json"), "utf8")) as object;
    const builtIn = parseCatalog(fs.readFileSync(path.join(DATA_DIR, "catalog.yaml"), "utf8"), schema);
    const extra = extraFile ? parseCatalog(fs.readFileSync(extraFile, "utf8"), schema) : [];
    catalog = [...extra, ...builtIn.filter((entry) => !extra.some((e) => e.name === entry.name))];
    cached.set(key, catalog);
  }
  return catalog;
}

function matches(pattern: string, origin: string): boolean {
  const wildcard = /^(https?:\/\/)\*\.(.+)$/.exec(pattern);
  if (!wildcard) return pattern === origin;
  const [, scheme, rest] = wildcard;
  return origin.startsWith(scheme!) && origin.slice(scheme!.length).endsWith(`.${rest}`);
}

/** The catalog entry for a token endpoint, by its origin. */
export function quirksFor(tokenEndpoint: string, catalog: ProviderQuirks[]): ProviderQuirks | undefined {
  let origin: string;
  try {
    origin = new URL(tokenEndpoint).origin;
  } catch {
    return undefined;
  }
  return catalog.find((entry) => entry.match.some((pattern) => matches(pattern, origin)));
}
