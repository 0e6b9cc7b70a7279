import * as oauth from "oauth4webapi";
import { EgressDeniedError } from "../egress/policy.js";

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
const MAX_CODE = 100;

/**
 * Escape sequences a terminal acts on: CSI (`ESC [ ... final`, or the 8-bit CSI), OSC, DCS, SOS,
 * PM and APC strings (up to BEL or ST, or to the end), and the other ESC sequences (ESC, any
 * intermediate bytes, a final byte).
 */
const ESCAPE_SEQUENCE =
  /(?:\u001b\[|\u009b)[0-?]*[ -/]*[@-~]?|(?:\u001b[\]PX^_]|[\u0090\u0098\u009d\u009e\u009f])[^\u0007\u001b\u009c]*(?:\u0007|\u001b\\|\u009c)?|\u001b[ -/]*[0-~]?/g;
/** C0 controls but tab and newline, DEL, and C1 controls. */
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;

/**
 * Text from a provider (an `error`, an `error_description`) made safe to store, log and print: no
 * escape sequence or control character survives (a description that cleared the screen and set
 * the terminal's title is only words now); tabs and newlines stay.
 */
export function plainText(text: string): string {
  return text.replace(ESCAPE_SEQUENCE, "").replace(CONTROL, "");
}

/** Provider text, plain (plainText) and length-capped. */
export function providerText(text: unknown, max = MAX_DESCRIPTION): string {
  const s = typeof text === "string" ? plainText(text) : "";
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

const clip = (text: unknown) => providerText(text);
/** An RFC 6749 error code as the provider sent it, plain and capped; undefined when absent. */
const codeOf = (code: unknown) => (typeof code === "string" ? providerText(code, MAX_CODE) : undefined);

function retryAfter(response: Response | undefined): number | undefined {
  const header = response?.headers.get("retry-after");
  if (!header) return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const at = Date.parse(header);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/**
 * A failed token-endpoint request as a kind (see FailureKind), from the error oauth4webapi or the
 * fetch threw: an RFC 6749 §5.2 error answer, a Basic challenge, a page that is not an answer, or
 * no answer at all.
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-5.2
 */
export function classify(error: unknown): ProviderFailure {
  // RFC 6749 §5.2: a client that authenticated with HTTP Basic is refused with 401 and a
  // WWW-Authenticate challenge; oauth4webapi reports the challenge instead of the body.
  if (error instanceof oauth.WWWAuthenticateChallengeError) {
    const challenge = error.cause[0];
    const code = codeOf(challenge?.parameters.error) ?? (error.status === 401 ? "invalid_client" : undefined);
    const description = clip(challenge?.parameters.error_description);
    const detail = [code, description].filter(Boolean).join(": ") || `HTTP ${error.status}`;
    if (code === "invalid_grant") return { kind: "reauthorize", code, message: `The provider refused the grant (${detail}).`, retryAfterMs: undefined };
    if (error.status >= 500 || error.status === 429) {
      return { kind: "transient", code, message: `The provider is unavailable (HTTP ${error.status}).`, retryAfterMs: retryAfter(error.response) };
    }
    return { kind: "configuration", code, message: `The provider rejected the client credentials (${detail}).`, retryAfterMs: undefined };
  }
  if (error instanceof oauth.ResponseBodyError) {
    const code = codeOf(error.error) ?? "";
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
  const denied = egressDenial(error);
  if (denied) {
    return { kind: "configuration", code: undefined, message: `${denied}: the server's own calls obey the egress policy.`, retryAfterMs: undefined };
  }
  // One message for every failure to get an answer (refused, reset, silent, not HTTP, timed out):
  // a worker names the endpoint, and telling these apart would make the server a port scanner.
  return { kind: "transient", code: undefined, message: UNREACHABLE, retryAfterMs: undefined };
}

export const UNREACHABLE = "Could not get an HTTP answer from the provider (no connection, no answer in time, or not HTTP).";

/** The egress policy's refusal in an error's cause chain (egress/outbound.ts), if any. */
function egressDenial(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; current instanceof Error && depth < 8; depth++) {
    if (current instanceof EgressDeniedError) return current.message;
    current = current.cause;
  }
  return undefined;
}
