import * as oauth from "oauth4webapi";

/**
 * What a failed token request means for the connection:
 * - `reauthorize`: the provider refused the grant (invalid_grant); only a new authorization helps.
 * - `configuration`: the client is wrong (invalid_client, unauthorized_client, ...); fix the secrets.
 * - `transient`: timeouts, network errors, 5xx, 429, non-JSON pages, odd answers: keep the tokens, retry later.
 */
export type FailureKind = "reauthorize" | "configuration" | "transient";

export interface ProviderFailure {
  kind: FailureKind;
  /** The RFC 6749 error code when the provider sent one. */
  code: string | undefined;
  /** Plain words, length-capped, never a token: safe for logs, errors and pages. */
  message: string;
  /** From a 429's Retry-After, when present. */
  retryAfterMs: number | undefined;
}

const MAX_DESCRIPTION = 200;

function clip(text: unknown): string {
  const s = typeof text === "string" ? text : "";
  return s.length > MAX_DESCRIPTION ? `${s.slice(0, MAX_DESCRIPTION)}…` : s;
}

function retryAfter(response: Response | undefined): number | undefined {
  const header = response?.headers.get("retry-after");
  if (!header) return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const at = Date.parse(header);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

export function classify(error: unknown): ProviderFailure {
  // RFC 6749 §5.2: a client that authenticated with HTTP Basic is refused with 401 and a
  // WWW-Authenticate challenge; oauth4webapi reports the challenge instead of the body.
  if (error instanceof oauth.WWWAuthenticateChallengeError) {
    const challenge = error.cause[0];
    const code = challenge?.parameters.error ?? (error.status === 401 ? "invalid_client" : undefined);
    const description = clip(challenge?.parameters.error_description);
    const detail = [code, description].filter(Boolean).join(": ") || `HTTP ${error.status}`;
    if (code === "invalid_grant") return { kind: "reauthorize", code, message: `The provider refused the grant (${detail}).`, retryAfterMs: undefined };
    if (error.status >= 500 || error.status === 429) {
      return { kind: "transient", code, message: `The provider is unavailable (HTTP ${error.status}).`, retryAfterMs: retryAfter(error.response) };
    }
    return { kind: "configuration", code, message: `The provider rejected the client credentials (${detail}).`, retryAfterMs: undefined };
  }
  if (error instanceof oauth.ResponseBodyError) {
    const code = error.error;
    const description = clip(error.error_description);
    const detail = description ? `${code}: ${description}` : code;
    if (code === "invalid_grant") {
      return { kind: "reauthorize", code, message: `The provider refused the grant (${detail}).`, retryAfterMs: undefined };
    }
    if (error.status >= 500 || error.status === 429) {
      return {
        kind: "transient",
        code,
        message: `The provider is unavailable (HTTP ${error.status}, ${detail}).`,
        retryAfterMs: retryAfter(error.response),
      };
    }
    if (code === "invalid_client" || code === "unauthorized_client") {
      return { kind: "configuration", code, message: `The provider rejected the client credentials (${detail}).`, retryAfterMs: undefined };
    }
    return { kind: "configuration", code, message: `The provider refused the request (${detail}).`, retryAfterMs: undefined };
  }
  if (error instanceof oauth.OperationProcessingError) {
    const response = (error.cause as Response | undefined) instanceof Response ? (error.cause as Response) : undefined;
    const status = response?.status;
    const what =
      error.code === oauth.RESPONSE_IS_NOT_JSON
        ? "an answer that is not JSON (an error page?)"
        : error.code === oauth.INVALID_RESPONSE
          ? "an answer without a usable access token"
          : status !== undefined && status >= 400
            ? "an error that is not an OAuth error answer (an error page?)"
            : `an unexpected answer (${clip(error.message)})`;
    return {
      kind: "transient",
      code: undefined,
      message: `The provider sent ${what}${status ? ` with HTTP ${status}` : ""}.`,
      retryAfterMs: retryAfter(response),
    };
  }
  const err = error as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (err?.name === "TimeoutError" || err?.name === "AbortError") {
    return { kind: "transient", code: undefined, message: "The provider did not answer in time.", retryAfterMs: undefined };
  }
  const cause = err?.cause?.code ?? err?.cause?.message ?? err?.message ?? String(error);
  return { kind: "transient", code: undefined, message: `Could not reach the provider (${clip(cause)}).`, retryAfterMs: undefined };
}
