import type { Kysely } from "kysely";
import * as oauth from "oauth4webapi";
import { AppError } from "../errors.js";
import { newId, randomToken, sha256Hex } from "../ids.js";
import * as oauthStore from "../store/oauth.js";
import type { Database, OauthFlowRow, WorkerRow } from "../store/schema.js";
import type { Keyring } from "../vault/keyring.js";
import { aad, openText, seal } from "../vault/seal.js";
import { classify, providerText } from "./classify.js";
import { authorizationServer, client, clientAuth, requestOptions } from "./http.js";
import type { OAuthSettings } from "./settings.js";

/** A flow's state is good for this long and once. */
export const FLOW_TTL_MS = 10 * 60 * 1000;

interface FlowSecret {
  codeVerifier: string;
  redirectUri: string;
}

/** The authorization request (RFC 6749 §4.1.1) with PKCE S256 (RFC 7636) and a single-use state. */
export async function startFlow(
  db: Kysely<Database>,
  keyring: Keyring,
  worker: WorkerRow,
  settings: OAuthSettings,
  now: number,
): Promise<{ authorizationUrl: string; state: string; redirectUrl: string }> {
  const state = randomToken(32);
  const codeVerifier = oauth.generateRandomCodeVerifier();
  const id = newId();
  const sealed = seal(keyring, JSON.stringify({ codeVerifier, redirectUri: settings.redirectUri } satisfies FlowSecret), aad.oauthFlow(worker.workspace_id, worker.id, id));
  await oauthStore.insertFlow(db, {
    id,
    state_hash: sha256Hex(state),
    workspace_id: worker.workspace_id,
    worker_id: worker.id,
    capability_key: settings.key,
    key_id: sealed.keyId,
    sealed: sealed.sealed,
    created_at: now,
    expires_at: now + FLOW_TTL_MS,
    consumed_at: null,
    status: "pending",
    error: null,
    hint: null,
    completed_at: null,
  });
  void oauthStore.deleteOldFlows(db, now - 24 * 3600 * 1000).catch(() => {});

  const url = new URL(settings.authorizationEndpoint.href);
  const params = url.searchParams;
  params.set("response_type", "code");
  params.set("client_id", settings.clientId);
  params.set("redirect_uri", settings.redirectUri);
  if (settings.scope) params.set("scope", settings.scope);
  params.set("state", state);
  if (settings.pkce) {
    params.set("code_challenge", await oauth.calculatePKCECodeChallenge(codeVerifier));
    params.set("code_challenge_method", "S256");
  }
  for (const [key, value] of Object.entries(settings.authorizationParams)) params.set(key, value);
  return { authorizationUrl: url.href, state, redirectUrl: settings.redirectUri };
}

/** The flow a callback's state names, consumed: a second use of the same state finds nothing. */
export async function takeFlow(db: Kysely<Database>, state: string | null, now: number): Promise<OauthFlowRow> {
  const invalid = new AppError("oauth_state_invalid", "This authorization response is unknown, expired or already used.", {
    hint: "Start again with `ntn workers oauth start <key>`.",
  });
  if (!state) throw invalid;
  const flow = await oauthStore.findFlowByStateHash(db, sha256Hex(state));
  if (!flow || !(await oauthStore.consumeFlow(db, flow.id, now))) throw invalid;
  return flow;
}

/**
 * The `error` a provider put on the redirect, as we keep and show it: plain text (no escape
 * sequence or control character), capped; "client_rejected" for the client errors.
 */
function redirectErrorCode(error: string): string {
  const code = providerText(error, 100);
  return code === "invalid_client" || code === "unauthorized_client" ? "client_rejected" : code;
}

/**
 * Plain words for the errors providers put on the redirect (RFC 6749 §4.1.2.1). The provider's
 * code and description are taken in as plain text, length-capped: they reach terminals and pages.
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
 * The redirect back from the provider: its error, or the code exchanged for tokens
 * (RFC 6749 §4.1.3) with the flow's PKCE verifier and the exact redirect URI it started with.
 */
export async function exchangeCode(
  keyring: Keyring,
  flow: OauthFlowRow,
  settings: OAuthSettings,
  query: URLSearchParams,
): Promise<oauth.TokenEndpointResponse> {
  const secret = JSON.parse(openText(keyring, { keyId: flow.key_id, sealed: flow.sealed }, aad.oauthFlow(flow.workspace_id, flow.worker_id, flow.id))) as FlowSecret;
  const error = query.get("error");
  if (error) {
    const described = describeAuthorizationError(error, query.get("error_description"), secret.redirectUri);
    const providerError = redirectErrorCode(error);
    throw new AppError("oauth_provider_error", described.message, { hint: described.hint, details: { redirectUrl: secret.redirectUri, providerError } });
  }
  const as = authorizationServer(settings);
  const params = new URLSearchParams(query);
  // The state was checked by lookup; `iss` is dropped as the issuer is not known (see http.ts).
  params.delete("iss");
  let answer: oauth.TokenEndpointResponse;
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
    answer = await oauth.processAuthorizationCodeResponse(as, client(settings), response);
  } catch (err) {
    if (err instanceof oauth.AuthorizationResponseError) {
      const described = describeAuthorizationError(err.error, err.error_description ?? null, secret.redirectUri);
      const providerError = redirectErrorCode(err.error);
      throw new AppError("oauth_provider_error", described.message, { hint: described.hint, details: { redirectUrl: secret.redirectUri, providerError } });
    }
    const failure = classify(err);
    const hint =
      failure.code === "invalid_client" || failure.code === "unauthorized_client"
        ? "Check the worker's client id and secret (ntn workers env set ...), then start again."
        : failure.code === "redirect_uri_mismatch" || /redirect/i.test(failure.message)
          ? `Register exactly this redirect URL with the provider: ${secret.redirectUri}`
          : "Start again with `ntn workers oauth start`.";
    throw new AppError("oauth_provider_error", `Exchanging the authorization code failed: ${failure.message}`, {
      hint,
      details: { redirectUrl: secret.redirectUri, providerError: failure.kind === "configuration" ? "client_rejected" : failure.code ?? null },
    });
  }
  return answer;
}

export function flowExpired(flow: OauthFlowRow, now: number): boolean {
  return flow.status === "pending" && flow.expires_at <= now;
}
