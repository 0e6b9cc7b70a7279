import type { FastifyReply, FastifyRequest } from "fastify";
import type { Caller } from "../auth/tokens.js";
import type { ActionName, ActionRequest, ActionResponse } from "./contract.js";
import type { ApiDeps } from "./app.js";
import type { StreamAnswer } from "./stream.js";

/** Who may call an action: no token, any token of a workspace, or an admin token. */
export type ActionAuth = "public" | "workspace" | "admin";

export interface ActionContext<A extends ActionName> {
  body: ActionRequest<A>;
  /** Present for every action but public ones. */
  caller: Caller;
  deps: ApiDeps;
  request: FastifyRequest;
  reply: FastifyReply;
}

export interface ActionDefinition<A extends ActionName = ActionName> {
  name: A;
  auth: ActionAuth;
  /** JSON Schema of the request body, checked by ajv before the handler runs. */
  schema: Record<string, unknown>;
  handle(ctx: ActionContext<A>): Promise<ActionResponse<A> | StreamAnswer>;
}

export function defineAction<A extends ActionName>(definition: ActionDefinition<A>): ActionDefinition {
  return definition as unknown as ActionDefinition;
}

// Schema pieces shared by the action files. Text never holds a NUL character: PostgreSQL cannot
// store one, and no id, name or key needs it (secret values, sealed as bytes, may).
const NO_NUL = "^[^\\u0000]*$";
export function text(maxLength: number, minLength = 0): Record<string, unknown> {
  return { type: "string", minLength, maxLength, pattern: NO_NUL };
}
export const id = text(200, 1);
export const shortText = text(500);

export function object(properties: Record<string, unknown>, required: string[] = []): Record<string, unknown> {
  return { type: "object", properties, required, additionalProperties: true };
}

export const isoTime = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());
