import * as oauth from "oauth4webapi";
import { AppError } from "../errors.js";
import type { OauthFlowRow } from "../store/schema.js";
import type { Keyring } from "../vault/keyring.js";
import { classify, providerText } from "./classify.js";
import { ClientRejectedError } from "./errors.js";
import { openFlowSecret } from "./flow.js";
import { authorizationServer, client, clientAuth, requestOptions } from "./http.js";
import type { OAuthSettings } from "./settings.js";

/** The `error` codes on a redirect that mean the provider refused the client. */
const CLIENT_ERRORS = new Set(["invalid_client", "unauthorized_client"]);

/**
 * Plain words for the errors providers put on the redirect. The provider's code and description
 * are taken in as plain text, length-capped: they reach terminals and pages.
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-4.1.2.1
 */
export function describeAuthorizationError(rawCode: string, rawDescription: string | null, redirectUri: string): { message: string; hint: string } {
  const code = providerText(rawCode, 100) || "an unnamed error";
  const description = rawDescription === null ? "" : providerText(rawDescription);
  const detail = description ? ` (${description})` : "";
  switch (code) {
    case "access_denied":
      return { message: `Access was denied at the provider${detail}.`, hint: "Run `ntn workers oauth start` again and approve the request." };
    case "redirect_uri_mismatch":
      return {
        message: `The provider says the redirect URL does not match the app's registration${detail}.`,
        hint: `Register exactly this redirect URL with the provider: ${redirectUri}`,
      };
    case "invalid_scope":
      return { message: `The provider refused the requested scope${detail}.`, hint: "Check `scope` in the worker's oauth configuration." };
    case "unauthorized_client":
    case "invalid_client":
      return { message: `The provider refused the client${detail}.`, hint: "Check the client id in the worker's secrets (ntn workers env set ...)." };
    default:
      return { message: `The provider answered ${code}${detail}.`, hint: "Run `ntn workers oauth start` again; if it persists, check the provider's app settings." };
  }
}

/**
 * An error response on the redirect (RFC 6749 §4.1.2.1) as the error to show: a refused client
 * is a ClientRejectedError, so the callback names the client's secrets.
 */
function authorizationResponseError(rawCode: string, rawDescription: string | null, redirectUri: string): AppError {
  const described = describeAuthorizationError(rawCode, rawDescription, redirectUri);
  const options = { hint: described.hint, details: { redirectUrl: redirectUri } };
  return CLIENT_ERRORS.has(providerText(rawCode, 100))
    ? new ClientRejectedError(described.message, options)
    : new AppError("oauth_provider_error", described.message, options);
}

/**
 * The redirect back from the provider: its error response, or the authorization code exchanged
 * for tokens with the flow's PKCE verifier and the exact redirect URI the flow started with.
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-4.1.3
 * @see https://www.rfc-editor.org/rfc/rfc7636#section-4.5
 * @throws ClientRejectedError when the provider refused the client, AppError
 *   oauth_provider_error for any other failure.
 */
export async function exchangeCode(
  keyring: Keyring,
  flow: OauthFlowRow,
  settings: OAuthSettings,
  query: URLSearchParams,
): Promise<oauth.TokenEndpointResponse> {
  const secret = openFlowSecret(keyring, flow);
  const error = query.get("error");
  if (error) throw authorizationResponseError(error, query.get("error_description"), secret.redirectUri);
  const as = authorizationServer(settings);
  const params = new URLSearchParams(query);
  // The state was checked by lookup; `iss` is dropped as the issuer is not known (see http.ts).
  params.delete("iss");
  try {
    const checked = oauth.validateAuthResponse(as, client(settings), params, params.get("state") ?? oauth.expectNoState);
    const response = await oauth.authorizationCodeGrantRequest(
      as,
      client(settings),
      clientAuth(settings),
      checked,
      secret.redirectUri,
      settings.pkce ? secret.codeVerifier : oauth.nopkce,
      requestOptions(settings),
    );
    return await oauth.processAuthorizationCodeResponse(as, client(settings), response);
  } catch (err) {
    if (err instanceof oauth.AuthorizationResponseError) throw authorizationResponseError(err.error, err.error_description ?? null, secret.redirectUri);
    const failure = classify(err);
    const hint =
      failure.code === "invalid_client" || failure.code === "unauthorized_client"
        ? "Check the worker's client id and secret (ntn workers env set ...), then start again."
        : failure.code === "redirect_uri_mismatch" || /redirect/i.test(failure.message)
          ? `Register exactly this redirect URL with the provider: ${secret.redirectUri}`
          : "Start again with `ntn workers oauth start`.";
    const message = `Exchanging the authorization code failed: ${failure.message}`;
    const options = { hint, details: { redirectUrl: secret.redirectUri } };
    throw failure.kind === "configuration" ? new ClientRejectedError(message, options) : new AppError("oauth_provider_error", message, options);
  }
}
