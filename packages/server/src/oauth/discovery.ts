import * as oauth from "oauth4webapi";
import type { OAuthSettings } from "./settings.js";

/** How long each metadata document gets to answer (a revocation is not worth a provider timeout per location). */
const DISCOVERY_TIMEOUT_MS = 5000;

/**
 * The provider's RFC 7009 revocation endpoint from its authorization server metadata at the
 * token endpoint's origin: RFC 8414's `/.well-known/oauth-authorization-server`, then OpenID
 * Connect Discovery's `/.well-known/openid-configuration`; undefined when neither publishes one
 * (GitHub, for one, has none). Never throws.
 * @see https://www.rfc-editor.org/rfc/rfc8414#section-3
 */
export async function discoverRevocationEndpoint(settings: Pick<OAuthSettings, "tokenEndpoint" | "fetch">): Promise<URL | undefined> {
  const issuer = new URL(settings.tokenEndpoint.origin);
  for (const algorithm of ["oauth2", "oidc"] as const) {
    try {
      const response = await oauth.discoveryRequest(issuer, {
        algorithm,
        [oauth.customFetch]: settings.fetch,
        signal: AbortSignal.timeout(DISCOVERY_TIMEOUT_MS),
        ...(issuer.protocol === "http:" ? { [oauth.allowInsecureRequests]: true } : {}),
      });
      const metadata = await oauth.processDiscoveryResponse(issuer, response);
      if (typeof metadata.revocation_endpoint === "string") return new URL(metadata.revocation_endpoint);
    } catch {
      // No metadata there: try the other well-known location, then give up.
    }
  }
  return undefined;
}
