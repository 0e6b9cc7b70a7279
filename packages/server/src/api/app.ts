import crypto from "node:crypto";
import { Readable } from "node:stream";
import multipart from "@fastify/multipart";
import { Ajv, type ValidateFunction } from "ajv";
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import type { KeyService } from "../admin.js";
import type { Caller, TokenService } from "../auth/tokens.js";
import type { CapabilityService } from "../capabilities/service.js";
import { AppError, isAppError } from "../errors.js";
import type { LoginService } from "../login/service.js";
import type { Logger } from "../log.js";
import type { SecretService } from "../secrets/service.js";
import type { StagedUpload, UploadService } from "../workers/uploads.js";
import type { WorkerService } from "../workers/service.js";
import type { WorkspaceService } from "../workspaces/service.js";
import type { BuildService } from "../builder/service.js";
import type { RunService } from "../runs/service.js";
import type { OAuthService } from "../oauth/service.js";
import { WEBHOOK_PATH, type WebhookService } from "../webhooks/service.js";
import { errorBody } from "./error-body.js";
import { lingerAfterEarlyAnswers } from "./middleware/early-answer.js";
import { overloadLimiter } from "./middleware/overload.js";
import { oauthActions } from "./actions/oauth.js";
import type { ActionDefinition } from "./action.js";
import { isStreamAnswer } from "./stream.js";
import { buildActions } from "./actions/builds.js";
import { runActions } from "./actions/runs.js";
import { loginActions } from "./actions/login.js";
import { secretActions } from "./actions/secrets.js";
import { serverActions } from "./actions/server.js";
import { tokenActions } from "./actions/tokens.js";
import { webhookActions } from "./actions/webhooks.js";
import { workerActions } from "./actions/workers.js";

/** The services the actions call (one function of one each), and the HTTP layer's own settings; built once in main.ts. */
export interface ApiDeps {
  log: Logger;
  version: string;
  tokens: TokenService;
  workspaces: WorkspaceService;
  keys: KeyService;
  workers: WorkerService;
  uploads: UploadService;
  secrets: SecretService;
  login: LoginService;
  builder: BuildService;
  capabilities: CapabilityService;
  runs: RunService;
  oauth: OAuthService;
  webhooks: WebhookService;
  /** The public base URL (no trailing slash), known once the server listens. */
  publicUrl(): string;
  limits: { bodyLimit: number; uploadLimit: number; maxConcurrentRequests?: number };
}

declare module "fastify" {
  interface FastifyRequest {
    caller?: Caller;
  }
}

export const ACTION_PREFIX = "/api/v3/workers";

export const CORE_ACTIONS: ActionDefinition[] = [
  ...workerActions,
  ...buildActions,
  ...runActions,
  ...oauthActions,
  ...secretActions,
  ...tokenActions,
  ...loginActions,
  ...serverActions,
  ...webhookActions,
];

function bearerToken(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (!header) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match?.[1];
}

/**
 * One ajv for every action's body schema, compiled on the first request of each action. No type
 * coercion and nothing removed: a body is valid as sent, or refused.
 */
function lazyValidators(): (route: { schema: unknown }) => (data: unknown) => boolean {
  let ajv: Ajv | undefined;
  return ({ schema }) => {
    let validate: ValidateFunction | undefined;
    const check = (data: unknown) => {
      ajv ??= new Ajv({ coerceTypes: false, removeAdditional: false, allErrors: false, useDefaults: false, strict: false });
      validate ??= ajv.compile(schema as object);
      const valid = validate(data);
      check.errors = validate.errors ?? null;
      return valid;
    };
    check.errors = null as ValidateFunction["errors"];
    return check;
  };
}

/**
 * How deeply a JSON body's arrays and objects may nest. Deeper input is no one's real data, and
 * walking it (ajv, JSON.stringify, the message to the worker process) recurses once per level:
 * 200,000 levels ran the stack out, a 500.
 */
export const MAX_JSON_DEPTH = 256;

/**
 * Whether JSON text nests arrays and objects deeper than `max`: one pass over the text, before it
 * is parsed, brackets inside strings not counted. Malformed text is left for the parser to refuse.
 */
export function nestedDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i += 1) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i += 1; // backslash: the next character is escaped
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x5b || c === 0x7b) {
      depth += 1;
      if (depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) {
      depth -= 1;
    }
  }
  return false;
}

/** Fastify's own request errors, each mapped to one of our stable codes. */
function fromFrameworkError(error: FastifyError): AppError | undefined {
  if (error.validation) {
    const detail = error.message.replace(/^body\/?\s*/, "");
    const text = /^must be object/.test(detail) ? "the body must be a JSON object" : detail || "it does not match the schema";
    return new AppError("validation_error", `Invalid request body: ${text}.`);
  }
  switch (error.code) {
    case "FST_ERR_CTP_INVALID_JSON_BODY":
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return new AppError("invalid_json", "The request body is not valid JSON.");
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return new AppError("body_too_large", "The request body is too large.");
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
    case "FST_INVALID_MULTIPART_CONTENT_TYPE":
      return new AppError("unsupported_media_type", "Unsupported Content-Type: send application/json.");
    case "FST_REQ_FILE_TOO_LARGE":
      return new AppError("archive_too_large", "The source archive is too large.", {
        hint: "Leave build output and large data out of the project folder.",
      });
    case "FST_PARTS_LIMIT":
    case "FST_FILES_LIMIT":
    case "FST_FIELDS_LIMIT":
      return new AppError("validation_error", "The upload holds too many parts; send the issued fields and one file.");
  }
  if (error instanceof SyntaxError || error.statusCode === 400) {
    return new AppError("invalid_json", "The request body is not valid JSON.");
  }
  return undefined;
}

/**
 * The HTTP layer: routes, validates (JSON Schema via ajv), authenticates, and shapes answers.
 * Business rules live in the services it calls. The server-rendered pages (web/routes.ts) are
 * registered on the same app by main.ts.
 */
export function createApi(deps: ApiDeps): FastifyInstance {
  const requestIdPrefix = crypto.randomBytes(4).toString("hex");
  let nextRequestId = 0;
  const app = Fastify({
    // Errors that happen before routing (a malformed URL, an over-long parameter, a request Node's
    // HTTP parser refuses) answer in the same error shape as everything else.
    frameworkErrors: (error, request, reply) => {
      const known =
        error.code === "FST_ERR_BAD_URL" || error.code === "FST_ERR_MAX_PARAM_LENGTH"
          ? new AppError("not_found", `Nothing here: ${request.method} (the URL is not valid).`)
          : new AppError("bad_request", "The request could not be read.");
      void (reply as FastifyReply).status(known.status).send(errorBody(known, request.id));
    },
    clientErrorHandler: (error: NodeJS.ErrnoException, socket) => {
      if (!socket.writable) return socket.destroy();
      const known =
        error.code === "HPE_HEADER_OVERFLOW"
          ? new AppError("headers_too_large", "The request's headers are too large.")
          : new AppError("bad_request", "The request is not valid HTTP.");
      const body = JSON.stringify(errorBody(known));
      socket.end(
        `HTTP/1.1 ${known.status} ${known.status === 431 ? "Request Header Fields Too Large" : "Bad Request"}\r\n` +
          `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
    },
    routerOptions: { maxParamLength: 500 },
    bodyLimit: deps.limits.bodyLimit,
    logger: false,
    return503OnClosing: true,
    // Unique within the process's log: a random prefix per process and a counter (random bytes per
    // request cost a system call on every request).
    genReqId: () => `req_${requestIdPrefix}${(nextRequestId++).toString(16).padStart(8, "0")}`,
    requestIdHeader: false,
  });

  // Request schemas compile on their first request, not all at start: starting stays fast.
  app.setValidatorCompiler(lazyValidators());
  // JSON only: Fastify would otherwise read text/plain bodies too.
  app.removeContentTypeParser("text/plain");
  // JSON bodies: Fastify's own parser (prototype poisoning refused), after a check of the nesting
  // depth, so no deep body reaches anything that walks it recursively.
  const parseJson = app.getDefaultJsonParser("error", "error");
  app.removeContentTypeParser("application/json");
  app.addContentTypeParser("application/json", { parseAs: "string" }, (request, body, done) => {
    if (nestedDeeperThan(body as string, MAX_JSON_DEPTH)) {
      done(new AppError("validation_error", `The request body is nested too deeply: JSON arrays and objects may nest at most ${MAX_JSON_DEPTH} levels.`), undefined);
      return;
    }
    parseJson(request, body as string, done);
  });

  // Overload is answered, not suffered: past the limit of requests in hand, 503 with Retry-After.
  app.addHook("onRequest", overloadLimiter(deps.limits.maxConcurrentRequests));

  app.setErrorHandler((error: FastifyError, request, reply) => {
    const known = isAppError(error) ? error : fromFrameworkError(error);
    if (known) {
      if (known.status === 401) reply.header("www-authenticate", 'Bearer realm="workyard"');
      if (known.status === 503 || known.status === 429) reply.header("retry-after", String(known.details?.retryAfterSeconds ?? 1));
      return reply.status(known.status).send(errorBody(known, request.id));
    }
    // A webhook URL holds its secret id: the log gets the path without it.
    const path = (request.url.split("?")[0] ?? "").replace(/^(\/webhooks\/worker\/[^/]+\/[^/]+\/)[^/]+/, "$1<secret>");
    deps.log.error({ err: error, requestId: request.id, url: path }, "request failed");
    const bug = new AppError("internal", `Internal server error (request ${request.id}).`, {
      hint: "This is a bug in Workyard; the server log has the details under this request id.",
    });
    return reply.status(500).send(errorBody(bug, request.id));
  });

  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split("?")[0] ?? "";
    // Under the webhook ingress: its own answers, and never the path (it holds a secret id) echoed
    // back. A method the router does not take (TRACE, PROPFIND...) is not allowed on any URL there.
    if (path.startsWith(`${WEBHOOK_PATH}/`)) {
      const routed = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"].includes(request.method);
      return routed ? reply.status(404).send({ error: "Not found" }) : reply.status(405).header("allow", "POST").send({ error: "Method not allowed" });
    }
    const error = path.startsWith(ACTION_PREFIX)
      ? new AppError("unknown_action", `Unknown action ${JSON.stringify(path.slice(ACTION_PREFIX.length))} (${request.method} ${path}).`, {
          hint: "Actions are POST /api/v3/workers<Action>; this server may be older than your CLI.",
        })
      : new AppError("not_found", `Nothing here: ${request.method} ${path}.`);
    return reply.status(error.status).send(errorBody(error, request.id));
  });

  for (const action of CORE_ACTIONS) {
    app.post(
      `${ACTION_PREFIX}${action.name}`,
      { schema: { body: action.schema } },
      async (request: FastifyRequest, reply: FastifyReply) => {
        let caller: Caller | undefined;
        if (action.auth !== "public") {
          caller = await deps.tokens.authenticate(bearerToken(request));
          if (action.auth === "admin" && caller.role !== "admin") {
            throw new AppError("forbidden", `${action.name} needs the server's admin token.`, {
              hint: "Use the token in <data dir>/admin-token.",
            });
          }
          request.caller = caller;
        }
        const answer = await action.handle({ body: (request.body ?? {}) as never, caller: caller as Caller, deps, request, reply });
        if (isStreamAnswer(answer)) {
          const lines = Readable.from(
            (async function* () {
              for await (const line of answer.stream) yield `${JSON.stringify(line)}\n`;
            })(),
          );
          return reply.type("application/x-ndjson; charset=utf-8").header("cache-control", "no-store").send(lines);
        }
        return reply.header("cache-control", "no-store").send(answer);
      },
    );
  }

  // The source-archive upload: multipart, fields first, then `file`. No Authorization header:
  // the one-time fields issued by CreateWorker / UpdateWorker are the credential, checked when the
  // file part begins, before any of it is read.
  void app.register(async (uploads) => {
    await uploads.register(multipart, {
      // One byte over the limit reaches the uploads service, which refuses the archive as it arrives.
      limits: { fileSize: deps.limits.uploadLimit + 1, files: 1, fields: 16, fieldSize: 4096, parts: 20 },
    });
    // An answer sent before the whole body arrived (forged fields, an archive over the limit)
    // reaches the client still sending, before the connection closes.
    lingerAfterEarlyAnswers(uploads);
    uploads.post("/api/v3/uploads/:uploadId", async (request, reply) => {
      if (!request.isMultipart()) {
        throw new AppError("unsupported_media_type", "Send the archive as multipart/form-data: the issued fields, then `file`.");
      }
      const { uploadId } = request.params as { uploadId: string };
      const fields: Record<string, string> = {};
      let staged: StagedUpload | undefined;
      let refused: unknown;
      try {
        try {
          for await (const part of request.parts()) {
            if (part.type === "field") {
              fields[part.fieldname] = String(part.value);
              continue;
            }
            if (part.fieldname !== "file" || staged) throw new AppError("validation_error", "The upload takes exactly one file part, named `file`.");
            staged = await deps.uploads.accept(uploadId, fields, part.file, { maxBytes: deps.limits.uploadLimit }).catch((error: unknown) => {
              throw (refused = error);
            });
          }
        } catch (error) {
          // busboy's own complaints (truncated body, missing boundary) are plain Errors.
          if (error === refused || isAppError(error) || (error as FastifyError).code?.startsWith("FST_")) throw error;
          throw new AppError("validation_error", "The upload is not valid multipart/form-data.");
        }
        if (!staged) throw new AppError("validation_error", "The upload has no `file` part.");
        await staged.store();
        return reply.status(200).send({ ok: true, size: staged.size });
      } finally {
        await staged?.discard();
      }
    });
  });

  app.get("/healthz", async () => ({ ok: true }));
  return app;
}
