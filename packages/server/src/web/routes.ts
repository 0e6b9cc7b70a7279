import type { FastifyInstance } from "fastify";
import type { ApiDeps } from "../api/app.js";
import { html, sendPage } from "./html.js";
import { registerLoginPages } from "./login.js";

/**
 * Every server-rendered page, in a plugin of their own: forms post urlencoded bodies (read with the
 * standard URLSearchParams), and only these routes accept them; the API takes JSON alone.
 */
export function registerWeb(app: FastifyInstance, deps: ApiDeps): void {
  void app.register(async (web) => {
    web.addContentTypeParser("application/x-www-form-urlencoded", { parseAs: "string", bodyLimit: 16 * 1024 }, (_req, body, done) => {
      done(null, Object.fromEntries(new URLSearchParams(body as string)));
    });
    web.get("/", async (_request, reply) =>
      sendPage(
        reply,
        200,
        "Workyard",
        html`<h1>Workyard</h1><p>This server runs Notion workers. Point the <code>ntn</code> CLI at it:</p><p><code>NOTION_API_BASE_URL=${deps.publicUrl()}</code></p>`,
      ),
    );
    registerLoginPages(web, deps);
    for (const register of deps.webPages ?? []) register(web, deps);
  });
}
