/**
 * Expected failures: the caller (or a provider) can fix them. Everything that is not an AppError is
 * a bug: the API logs it with a request id and answers a bare 500 `internal`.
 *
 * Codes are stable snake_case identifiers; the table below is the only place that maps a code to
 * its HTTP status, so a code never answers two different statuses.
 */
export const ERROR_STATUS = {
  // request shape
  bad_request: 400,
  headers_too_large: 431,
  invalid_json: 400,
  validation_error: 400,
  body_too_large: 413,
  unsupported_media_type: 415,
  unknown_action: 404,
  not_found: 404,
  // authentication and scope
  unauthorized: 401,
  forbidden: 403,
  // resources
  worker_not_found: 404,
  secret_not_found: 404,
  token_not_found: 404,
  run_not_found: 404,
  capability_not_found: 404,
  login_session_not_found: 404,
  env_name_invalid: 400,
  // A name the worker's runtime reads itself (NODE_*, LD_*, ...): secrets/service.ts reservedEnvName.
  env_name_reserved: 400,
  // A value no environment variable can hold (a NUL byte); the message names the variable only.
  env_value_invalid: 400,
  // uploads and builds
  upload_signature_invalid: 403,
  upload_expired: 410,
  upload_already_used: 409,
  archive_invalid: 400,
  archive_too_large: 413,
  nothing_to_build: 409,
  build_in_progress: 409,
  build_failed: 422,
  // A file:, link:, git or URL dependency: builds install from the registry only.
  dependency_refused: 422,
  no_live_deployment: 409,
  // runs and builds
  // The server cannot run workers apart from itself (no namespaces, and as root no usable uid).
  sandbox_unavailable: 503,
  // runs
  run_failed: 422,
  // The worker's module threw while loading (or exported no Worker): its error, not the server's.
  worker_load_failed: 422,
  capability_not_runnable: 400,
  capability_not_supported: 501,
  input_too_large: 413,
  // oauth
  oauth_not_connected: 409,
  oauth_needs_reauthorization: 409,
  oauth_not_configured: 409,
  // The provider failed or refused: the request cannot succeed now, through no fault of the
  // server. A 4xx (424 Failed Dependency), as provider error pages are bad input to us.
  oauth_provider_error: 424,
  oauth_flow_not_found: 404,
  oauth_state_invalid: 400,
  oauth_refresh_busy: 503,
  // webhooks
  webhook_not_found: 404,
  delivery_not_found: 404,
  delivery_in_progress: 409,
  // server
  store_busy: 503,
  overloaded: 503,
  rate_limited: 429,
  internal: 500,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly hint: string | undefined;
  /** Extra fields rendered into the error body (never secrets). */
  readonly details: Record<string, unknown> | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    options: { hint?: string; details?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "AppError";
    this.code = code;
    this.status = ERROR_STATUS[code];
    this.hint = options.hint;
    this.details = options.details;
  }
}

export function isAppError(error: unknown): error is AppError {
  return error instanceof AppError;
}

/** Shorthands for the errors that many modules raise. */
export const workerNotFound = (workerId: string) =>
  new AppError("worker_not_found", `Worker ${JSON.stringify(workerId)} not found.`, {
    hint: "Run `ntn workers list` to see the workers of this workspace.",
  });
