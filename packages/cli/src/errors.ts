/**
 * Exit codes, as the official ntn 0.4.0 uses them: 0 ok, 1 a prompt that cannot be answered (or a
 * local input error), 2 usage, 4 not authenticated, 5 any other failure.
 */
export const EXIT = { ok: 0, local: 1, usage: 2, auth: 4, failure: 5 } as const;

/** Something the user can fix: printed as `error: <message>` and `  hint: <hint>`, no stack. */
export class UserError extends Error {
  exitCode: number = EXIT.failure;
  readonly hint: string | undefined;
  constructor(message: string, options: { hint?: string | undefined; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "UserError";
    this.hint = options.hint;
  }
}

/** Wrong command line: exit 2, with the command's usage. */
export class UsageError extends UserError {
  override exitCode: number = EXIT.usage;
  constructor(message: string, options: { hint?: string } = {}) {
    super(message, options);
    this.name = "UsageError";
  }
}

/** No credentials, or the server refused them: exit 4. */
export class AuthError extends UserError {
  override exitCode: number = EXIT.auth;
  constructor(message: string, options: { hint?: string | undefined; cause?: unknown } = {}) {
    super(message, options);
    this.name = "AuthError";
  }
}

/**
 * A local problem, as the official CLI counts them: a question that needs a terminal, bad local
 * input (--data, stdin), a file that cannot be read or written, a broken workers.json. Exit 1.
 */
export class LocalError extends UserError {
  override exitCode: number = EXIT.local;
  constructor(message: string, options: { hint?: string | undefined; cause?: unknown } = {}) {
    super(message, options);
    this.name = "LocalError";
  }
}

/** The server answered with an error body. */
export class ApiError extends UserError {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
    readonly body: Record<string, unknown> | undefined,
    hint?: string,
  ) {
    super(message, { hint });
    this.name = "ApiError";
  }
}

export function isUserError(error: unknown): error is UserError {
  return error instanceof UserError;
}
