import type { FastifyInstance } from "fastify";
import { lingerAfterEarlyAnswers } from "../api/middleware/early-answer.js";
import { WEBHOOK_PATH, type WebhookService } from "../webhooks/service.js";

/**
 * The webhook ingress: `<public url>/webhooks/worker/<workspaceId>/<workerId>/<secretId>/<key>`,
 * any method (the service answers 405 to all but POST) and any body, read as bytes up to the
 * limit (413 past it, nothing stored).
 */
export function registerWebhookIngress(app: FastifyInstance, deps: { webhooks: Pick<WebhookService, "receive">; maxBodyBytes: number }): void {
  void app.register(async (ingress) => {
    // A body over the limit is answered 413 as it arrives; the sender reads that answer.
    lingerAfterEarlyAnswers(ingress);
    ingress.removeAllContentTypeParsers();
    ingress.addContentTypeParser("*", { parseAs: "buffer", bodyLimit: deps.maxBodyBytes }, (_request, body, done) => done(null, body));
    // Any Content-Type a sender gives, well-formed or not, is the worker's to read: Fastify would
    // refuse a malformed one (415) before the body is read, so it is set aside and given back.
    const given = new WeakMap<object, string | undefined>();
    ingress.addHook("onRequest", async (request) => {
      given.set(request, request.headers["content-type"]);
      request.headers["content-type"] = "application/octet-stream";
    });
    ingress.route<{ Params: { workspaceId: string; workerId: string; secretId: string; key: string } }>({
      method: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
      url: `${WEBHOOK_PATH}/:workspaceId/:workerId/:secretId/:key`,
      bodyLimit: deps.maxBodyBytes,
      async handler(request, reply) {
        const body = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
        const query = Object.fromEntries(Object.entries(request.query as Record<string, unknown>).map(([k, v]) => [k, String(v)]));
        const headers = { ...request.headers, "content-type": given.get(request) };
        const answer = await deps.webhooks.receive(request.params, { method: request.method, url: request.url, query, headers, body });
        void reply.code(answer.status).headers(answer.headers ?? {});
        return reply.send(answer.body);
      },
    });
  });
}
