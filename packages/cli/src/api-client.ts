import type { ActionName, ActionRequest, ActionResponse, ErrorBody, StreamLine } from "@workyard/server/contract";
import { ApiError, AuthError, UserError } from "./errors.js";

export const CLI_VERSION = "0.1.0";
const USER_AGENT = `ntn-workyard-${CLI_VERSION}`;

/** What the official CLI says before the server's message, per action. */
const ACTION_VERBS: Partial<Record<ActionName, string>> = {
  ListWorkers: "list workers",
  CreateWorker: "create worker",
  UpdateWorker: "update worker",
  GetWorker: "get worker",
  DeleteWorker: "delete worker",
  BuildWorker: "build worker",
  UpsertSecrets: "set secrets",
  ListSecrets: "list secrets",
  DeleteSecret: "delete secret",
  PullEnv: "pull env",
  RunCapability: "run capability",
  CreateToken: "create token",
  ListTokens: "list tokens",
  RevokeToken: "revoke token",
};

/**
 * Actions that change nothing, or set what they set whatever happened before: a busy server's
 * 503 (or a 429) is retried for them, after its Retry-After. The others (a run, a build, a create)
 * might have happened already and are left to the user.
 */
const IDEMPOTENT = new Set<ActionName>([
  "ListWorkers",
  "GetWorker",
  "ListCapabilities",
  "ListSecrets",
  "UpsertSecrets",
  "PullEnv",
  "GetOauthToken",
  "GetOauthStatus",
  "GetOauthFlow",
  "ListRunsForWorker",
  "GetRunLogs",
  "ListWebhooks",
  "ListWebhookDeliveries",
  "UnblockWebhook",
  "SetWebhookVerification",
  "ListTokens",
  "WhoAmI",
  "GetServerInfo",
] as ActionName[]);

/** Tries of an idempotent call, and the time they may take in all. */
const RETRY = { tries: 3, withinMs: 30_000, defaultWaitMs: 1000 };

/**
 * The only HTTP client of the server API: `POST <base>/api/v3/workers<Action>` with a JSON body.
 * Error bodies become ApiError (exit 5) or AuthError (401, exit 4) carrying the server's message
 * and hint; the raw body is kept for --verbose.
 */
export class ApiClient {
  constructor(
    readonly baseUrl: string,
    private readonly token: string | undefined,
  ) {}

  private async post(action: ActionName, body: unknown, signal?: AbortSignal): Promise<Response> {
    const started = Date.now();
    for (let attempt = 1; ; attempt++) {
      const response = await this.postOnce(action, body, signal);
      if (response.ok) return response;
      const busy = response.status === 503 || response.status === 429;
      const wait = retryAfterMs(response.headers.get("retry-after"));
      if (!busy || !IDEMPOTENT.has(action) || attempt >= RETRY.tries || Date.now() - started + wait > RETRY.withinMs) {
        throw await this.errorFrom(action, response);
      }
      await response.body?.cancel().catch(() => {});
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  private async postOnce(action: ActionName, body: unknown, signal?: AbortSignal): Promise<Response> {
    const url = `${this.baseUrl}/api/v3/workers${action}`;
    const headers: Record<string, string> = { "content-type": "application/json", "user-agent": USER_AGENT };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    let response: Response;
    try {
      response = await fetch(url, { method: "POST", headers, body: JSON.stringify(body ?? {}), ...(signal ? { signal } : {}) });
    } catch (error) {
      if ((error as Error).name === "AbortError") throw error;
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      throw new UserError(`Cannot reach the server at ${this.baseUrl}: ${cause?.code ?? cause?.message ?? (error as Error).message}.`, {
        hint: "Is `ntn server` running? Check NOTION_API_BASE_URL or `ntn whoami`.",
        cause: error,
      });
    }
    return response;
  }

  private async errorFrom(action: ActionName, response: Response): Promise<Error> {
    const text = await response.text().catch(() => "");
    let body: Partial<ErrorBody> | undefined;
    try {
      body = JSON.parse(text) as Partial<ErrorBody>;
    } catch {
      body = undefined;
    }
    const verb = ACTION_VERBS[action] ?? action;
    const message =
      typeof body?.message === "string"
        ? body.message
        : `Failed to ${verb}: ${response.status} ${response.statusText}${text ? ` ${text.slice(0, 200)}` : ""}`;
    if (response.status === 401) {
      return new AuthError(message, { hint: body?.hint ?? "Log in again with `ntn login`, or check NOTION_API_TOKEN." });
    }
    return new ApiError(message, response.status, body?.code ?? "http_error", body as Record<string, unknown> | undefined, body?.hint);
  }

  async call<A extends ActionName>(action: A, body: ActionRequest<A>): Promise<ActionResponse<A>> {
    const response = await this.post(action, body);
    const text = await response.text();
    try {
      return (text ? JSON.parse(text) : {}) as ActionResponse<A>;
    } catch {
      throw new UserError(`The server's answer to ${action} is not JSON.`, { hint: `Is ${this.baseUrl} a Workyard server?` });
    }
  }

  /** An NDJSON answer (BuildWorker, RunCapability with stream:true), line by line. */
  async *stream<A extends ActionName>(action: A, body: ActionRequest<A>): AsyncGenerator<StreamLine> {
    const response = await this.post(action, body);
    if (!response.body) return;
    const decoder = new TextDecoder();
    let buffered = "";
    const chunks = (response.body as unknown as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
    for (;;) {
      let next: IteratorResult<Uint8Array>;
      try {
        next = await chunks.next();
      } catch (error) {
        // The server went away mid-stream (stopped, crashed, network): the user's problem to know, not a bug.
        throw new UserError(`The connection to the server at ${this.baseUrl} was lost during ${action}.`, {
          hint: "Whatever was live before stays live; check the server, then try again.",
          cause: error,
        });
      }
      if (next.done) break;
      buffered += decoder.decode(next.value, { stream: true });
      let newline: number;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline).trim();
        buffered = buffered.slice(newline + 1);
        if (line) yield parseLine(line);
      }
    }
    buffered += decoder.decode();
    if (buffered.trim()) yield parseLine(buffered.trim());
  }
}

/** Retry-After in seconds or as an HTTP date; a second when absent or unreadable. */
function retryAfterMs(header: string | null): number {
  if (!header) return RETRY.defaultWaitMs;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const at = Date.parse(header);
  return Number.isNaN(at) ? RETRY.defaultWaitMs : Math.max(0, at - Date.now());
}

function parseLine(line: string): StreamLine {
  try {
    return JSON.parse(line) as StreamLine;
  } catch {
    return { _tag: "log", event: { stream: "stdout", data: line } };
  }
}
