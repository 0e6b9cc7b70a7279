import fs from "node:fs";
import path from "node:path";
import { Ajv } from "ajv";
import YAML from "yaml";
import { PACKAGE_ROOT } from "../../package-root.js";

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

// The data files stay beside their loader's source.
const DATA_DIR = path.join(PACKAGE_ROOT, "src", "oauth", "providers");

export class CatalogError extends Error {}

/** Parses and checks a catalog: unknown keys, bad values and duplicate names are errors. */
export function parseCatalog(yamlText: string, schema: object): ProviderQuirks[] {
  const data = YAML.parse(yamlText) as unknown;
  const ajv = new Ajv({ allErrors: true });
  const validate = ajv.compile(schema);
  if (!validate(data)) {
    const problems = (validate.errors ?? []).map((e) => {
      const key = (e.params as { additionalProperty?: string }).additionalProperty;
      return `${e.instancePath || "/"} ${e.message ?? ""}${key ? ` (${JSON.stringify(key)})` : ""}`.trim();
    });
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

const cached = new Map<string, Promise<ProviderQuirks[]>>();

// Reading is cheap but checking (ajv compiles the schema) is not: done once, on first use.
async function readCatalog(extraFile: string | undefined): Promise<ProviderQuirks[]> {
  const schema = JSON.parse(fs.readFileSync(path.join(DATA_DIR, "schema.json"), "utf8")) as object;
  let extraText: string | undefined;
  if (extraFile) {
    try {
      extraText = fs.readFileSync(extraFile, "utf8");
    } catch (error) {
      throw new CatalogError(`Cannot read the provider catalog ${extraFile}: ${(error as Error).message}`);
    }
  }
  const builtIn = parseCatalog(fs.readFileSync(path.join(DATA_DIR, "catalog.yaml"), "utf8"), schema);
  const extra = extraText === undefined ? [] : parseCatalog(extraText, schema);
  return [...extra, ...builtIn.filter((entry) => !extra.some((e) => e.name === entry.name))];
}

/**
 * The built-in catalog (checked against schema.json when first read, and by the test suite), with
 * an operator's own entries first when `extraFile` names one (same format and schema): quirks for
 * a provider Workyard does not know, without a fork.
 */
export function loadCatalog(extraFile?: string): Promise<ProviderQuirks[]> {
  const key = extraFile ?? "";
  let catalog = cached.get(key);
  if (!catalog) {
    catalog = readCatalog(extraFile);
    cached.set(key, catalog);
    catalog.catch(() => cached.delete(key));
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
