import type { FastifyReply, FastifyRequest } from "fastify";
import { AppError } from "../../errors.js";
import { errorBody } from "../error-body.js";

/** Requests in hand at once when the configuration sets no limit. */
export const DEFAULT_MAX_IN_FLIGHT = 4096;

/**
 * Overload is answered, not suffered: an `onRequest` hook that counts the requests in hand (from
 * their start until their response closes) and, past `maxInFlight`, answers at once with 503
 * `overloaded` and Retry-After, before the request is read or routed.
 */
export function overloadLimiter(maxInFlight: number = DEFAULT_MAX_IN_FLIGHT) {
  let inFlight = 0;
  return async function limitInFlight(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    if (inFlight >= maxInFlight) {
      const busy = new AppError("overloaded", "The server is handling too many requests; try again shortly.", { hint: "Retry after the time in the Retry-After header." });
      return reply.status(busy.status).header("retry-after", "1").send(errorBody(busy, request.id));
    }
    inFlight += 1;
    reply.raw.once("close", () => (inFlight -= 1));
  };
}
