import * as oauth from "oauth4webapi";
import { isAppError } from "../errors.js";
import { classify } from "./classify.js";
import type { Credentials } from "./credentials.js";
import { discoverRevocationEndpoint } from "./discovery.js";
import { authorizationServer, client, clientAuth, requestOptions } from "./http.js";
import type { OAuthSettings } from "./settings.js";

/** What revoking a connection did at the provider (the stored tokens are deleted either way). */
export interface RevocationOutcome {
  revokedAtProvider: boolean;
  /** Why the provider did not confirm it, in words for the user. */
  message?: string;
}

/**
 * The revocation request and its response: the token is sent to the revocation endpoint, which
 * answers 200 whether or not it knew the token (§2.2); anything else is thrown.
 * @see https://www.rfc-editor.org/rfc/rfc7009#section-2.1
 */
export async function revocationRequest(settings: OAuthSettings, endpoint: URL, token: string): Promise<void> {
  const as = { ...authorizationServer(settings), revocation_endpoint: endpoint.href };
  const response = await oauth.revocationRequest(as, client(settings), clientAuth(settings), token, requestOptions(settings));
  await oauth.processRevocationResponse(response);
}

/** Why a revocation was not confirmed, from whatever failed on the way (settings, provider). */
export function notRevoked(error: unknown): RevocationOutcome {
  return { revokedAtProvider: false, message: isAppError(error) ? error.message : `The provider did not confirm the revocation: ${classify(error).message}` };
}

/**
 * Revokes a connection's grant at the provider where it has a revocation endpoint (the catalog's,
 * else discovered): the refresh token when there is one, as revoking it ends the grant (§2.1),
 * else the access token. `credentials` are opened only when there is an endpoint. Never throws.
 * @see https://www.rfc-editor.org/rfc/rfc7009
 */
export async function revokeAtProvider(settings: OAuthSettings, credentials: () => Credentials): Promise<RevocationOutcome> {
  try {
    const endpoint = settings.revocationEndpoint ?? (await discoverRevocationEndpoint(settings));
    if (!endpoint) {
      return {
        revokedAtProvider: false,
        message: "The provider has no token revocation endpoint (RFC 7009) that Workyard knows; revoke the app's access in the provider's settings.",
      };
    }
    const { refresh_token, access_token } = credentials();
    await revocationRequest(settings, endpoint, refresh_token ?? access_token);
    return { revokedAtProvider: true };
  } catch (error) {
    return notRevoked(error);
  }
}
