import type { WorkerManifest } from "../builder/manifest.js";
import type { BuildService } from "../builder/service.js";
import { AppError, isAppError } from "../errors.js";
import type { WorkerRow } from "../store/schema.js";
import { oauthCapabilityNotFound } from "./errors.js";
import { PROVIDER_TIMEOUT_MS } from "./http.js";
import { quirksFor, type ProviderQuirks } from "./providers/load.js";

/** The path of the server's OAuth callback page, under its public URL: the one definition. */
export const OAUTH_CALLBACK_PATH = "/workers/oauth/callback";

/** The redirect URI providers must have registered for this server. */
export function redirectUriFor(publicUrl: string): string {
  return `${publicUrl}${OAUTH_CALLBACK_PATH}`;
}

export interface SettingsContext {
  publicUrl: string;
  /** The server's own fetch, under the egress policy (egress/outbound.ts). */
  fetch?: typeof fetch;
  /** How long a token endpoint gets to answer (default PROVIDER_TIMEOUT_MS). */
  providerTimeoutMs?: number;
  allowInsecure: boolean;
  catalog: ProviderQuirks[];
}

/** What a worker's `worker.oauth(key, config)` becomes, with the catalog's quirks applied. */
export interface OAuthSettings {
  key: string;
  /** The config's `name`; the runtime variable is derived from it. */
  name: string;
  envKey: string;
  authorizationEndpoint: URL;
  tokenEndpoint: URL;
  /** As the provider wants it (the catalog's scope separator applied). */
  scope: string;
  clientId: string;
  clientSecret: string;
  authorizationParams: Record<string, string>;
  redirectUri: string;
  /** The worker's accessTokenExpireMs, else the catalog's default for the provider. */
  accessTokenTtlMs: number | undefined;
  accessTokenTtlSource: "config" | "catalog" | undefined;
  tokenAuthMethod: "basic" | "post";
  pkce: boolean;
  extraTokenParams: Record<string, string>;
  revocationEndpoint: URL | undefined;
  quirks: ProviderQuirks | undefined;
  providerTimeoutMs: number;
  /** Every request to the provider goes through it: the egress policy applies to the server too. */
  fetch: typeof fetch;
}

/** `OAUTH_<upper-case hex of the UTF-8 name>_ACCESS_TOKEN`, exactly as the SDK computes it. */
export function envKeyFor(name: string): string {
  return `OAUTH_${Buffer.from(name, "utf8").toString("hex").toUpperCase()}_ACCESS_TOKEN`;
}

const LOOPBACK = new Set(["127.0.0.1", "::1", "[::1]", "localhost"]);

/** https, or plain http for loopback; any other http needs --allow-insecure-oauth. */
export function checkEndpoint(label: string, value: unknown, allowInsecure: boolean): URL {
  let url: URL;
  try {
    url = new URL(String(value));
  } catch {
    throw new AppError("oauth_not_configured", `The ${label} ${JSON.stringify(value)} is not a URL.`, { hint: "Fix it in src/index.ts and deploy again." });
  }
  if (url.protocol === "https:") return url;
  if (url.protocol === "http:" && (LOOPBACK.has(url.hostname) || allowInsecure)) return url;
  throw new AppError("oauth_not_configured", `The ${label} ${url.href} is not https.`, {
    hint: "OAuth endpoints must use https (plain http is allowed for 127.0.0.1, ::1 and localhost, or with `ntn server --allow-insecure-oauth`).",
  });
}

type OAuthEntry = { _tag: string; key: string; config?: Record<string, unknown> };

/** The OAuth capability `key` of a manifest, or a clear error. */
export function oauthCapability(manifest: WorkerManifest, key: string): OAuthEntry {
  const capability = manifest.capabilities.find((c) => c.key === key);
  if (!capability) throw oauthCapabilityNotFound(key);
  if (capability._tag !== "oauth") throw oauthCapabilityNotFound(key, { otherTag: capability._tag });
  return capability;
}

export function resolveSettings(capability: OAuthEntry, options: SettingsContext): OAuthSettings {
  const config = capability.config ?? {};
  const name = typeof config.name === "string" ? config.name : capability.key;
  if (config.type === "notion_managed" || "provider" in config) {
    throw new AppError("capability_not_supported", `${JSON.stringify(capability.key)} uses a Notion-managed OAuth provider, which is not supported by this server yet.`, {
      hint: "Use a user-managed configuration: authorizationEndpoint, tokenEndpoint, clientId and clientSecret.",
    });
  }
  const tokenEndpoint = checkEndpoint("tokenEndpoint", config.tokenEndpoint, options.allowInsecure);
  const authorizationEndpoint = checkEndpoint("authorizationEndpoint", config.authorizationEndpoint, options.allowInsecure);
  const quirks = quirksFor(tokenEndpoint.href, options.catalog);
  const rawScope = typeof config.scope === "string" ? config.scope : "";
  const scope = quirks?.scopeSeparator ? rawScope.trim().split(/\s+/).filter(Boolean).join(quirks.scopeSeparator) : rawScope;
  const params = (config.authorizationParams ?? {}) as Record<string, unknown>;
  const authorizationParams: Record<string, string> = { ...(quirks?.extraAuthorizeParams ?? {}) };
  for (const [k, v] of Object.entries(params)) authorizationParams[k] = String(v);
  const configTtl = typeof config.accessTokenExpireMs === "number" && config.accessTokenExpireMs > 0 ? config.accessTokenExpireMs : undefined;
  const ttl = configTtl ?? quirks?.defaultAccessTokenTtlMs;
  // Always the server's own callback: a manifest's callbackUrl cannot send the code (and the
  // state) anywhere else.
  const redirectUri = redirectUriFor(options.publicUrl);
  return {
    key: capability.key,
    name,
    envKey: envKeyFor(name),
    authorizationEndpoint,
    tokenEndpoint,
    scope,
    clientId: typeof config.clientId === "string" ? config.clientId : "",
    clientSecret: typeof config.clientSecret === "string" ? config.clientSecret : "",
    authorizationParams,
    redirectUri,
    accessTokenTtlMs: ttl,
    accessTokenTtlSource: configTtl ? "config" : ttl ? "catalog" : undefined,
    tokenAuthMethod: quirks?.tokenAuthMethod ?? "post",
    pkce: quirks?.pkce !== "none",
    extraTokenParams: quirks?.extraTokenParams ?? {},
    revocationEndpoint: quirks?.revocationEndpoint ? new URL(quirks.revocationEndpoint) : undefined,
    quirks,
    providerTimeoutMs: options.providerTimeoutMs ?? PROVIDER_TIMEOUT_MS,
    fetch: options.fetch ?? fetch,
  };
}

/** An OAuth capability whose settings cannot resolve (bad endpoint, Notion-managed, ...), with why. */
export interface BrokenSettings {
  key: string;
  name: string;
  error: AppError;
}

/**
 * Settings as the live deployment's manifest makes them, re-read with the worker's current
 * secrets (builder.liveManifest): for one capability, or for all of them.
 */
export function createLiveSettings(options: { builder: Pick<BuildService, "liveManifest">; context: () => Promise<SettingsContext> }) {
  const { builder, context } = options;
  // Settings resolved from an opened manifest (the builder keeps one object per deployment and
  // secrets version), kept beside it: a token read does not parse endpoints and match the catalog
  // again. A new manifest or a new public URL resolves anew; a failure is never kept.
  const resolved = new WeakMap<WorkerManifest, Map<string, { context: SettingsContext; settings: OAuthSettings }>>();
  const settingsOf = (manifest: WorkerManifest, capability: OAuthEntry, ctx: SettingsContext): OAuthSettings => {
    let byKey = resolved.get(manifest);
    const hit = byKey?.get(capability.key);
    if (hit && sameContext(hit.context, ctx)) return hit.settings;
    const settings = resolveSettings(capability, ctx);
    if (!byKey) resolved.set(manifest, (byKey = new Map()));
    byKey.set(capability.key, { context: ctx, settings });
    return settings;
  };
  return {
    /** One OAuth capability's settings; `workerIsFresh` when the worker row was read in this request. */
    async settingsFor(worker: WorkerRow, key: string, workerIsFresh = false): Promise<OAuthSettings> {
      const live = await builder.liveManifest(worker, { workerIsFresh });
      if (!live) throw new AppError("no_live_deployment", "This worker has no live deployment yet.", { hint: "Run `ntn workers deploy` first." });
      return settingsOf(live.manifest, oauthCapability(live.manifest, key), await context());
    },

    /** Every OAuth capability of the live manifest, as settings (those that cannot resolve are left out with their error). */
    async allSettings(worker: WorkerRow, workerIsFresh = false): Promise<{ settings: OAuthSettings[]; broken: BrokenSettings[] }> {
      if (!worker.live_deployment_id && workerIsFresh) return { settings: [], broken: [] };
      const live = await builder.liveManifest(worker, { workerIsFresh });
      const result = { settings: [] as OAuthSettings[], broken: [] as BrokenSettings[] };
      const ctx = await context();
      for (const capability of live?.manifest.capabilities ?? []) {
        if (capability._tag !== "oauth") continue;
        try {
          result.settings.push(settingsOf(live!.manifest, capability, ctx));
        } catch (error) {
          if (!isAppError(error)) throw error;
          const name = typeof capability.config?.name === "string" ? capability.config.name : capability.key;
          result.broken.push({ key: capability.key, name, error });
        }
      }
      return result;
    },
  };
}

/** Whether two contexts resolve settings alike (the catalog is one array once read). */
function sameContext(a: SettingsContext, b: SettingsContext): boolean {
  return a.publicUrl === b.publicUrl && a.catalog === b.catalog && a.allowInsecure === b.allowInsecure && a.fetch === b.fetch && a.providerTimeoutMs === b.providerTimeoutMs;
}
