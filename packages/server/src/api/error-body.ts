import type { AppError } from "../errors.js";
import type { ErrorBody } from "./contract.js";

/** An expected failure as the wire carries it (contract.ts ErrorBody). */
export function errorBody(error: AppError, requestId?: string): ErrorBody {
  // Details first, so they can never replace the fields every client relies on.
  const body: ErrorBody = {
    ...error.details,
    object: "error",
    status: error.status,
    code: error.code,
    name: error.code,
    message: error.message,
  };
  if (error.hint) body.hint = error.hint;
  if (requestId) body.request_id = requestId;
  return body;
}
