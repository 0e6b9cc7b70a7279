import type { FastifyInstance } from "fastify";
import { OAUTH_CALLBACK_PATH } from "../oauth/settings.js";
import { html, sendPage } from "./html.js";
import type { WebDeps } from "./routes.js";

/**
 * `<public url>/workers/oauth/callback`: where providers send the person back. The page says
 * whether the connection worked, or what failed in plain words; it never shows a token and never
 * echoes the query string.
 */
export function registerOAuthCallback(app: FastifyInstance, deps: Pick<WebDeps, "oauth">): void {
  app.get(OAUTH_CALLBACK_PATH, async (request, reply) => {
    const query = new URLSearchParams(request.url.split("?")[1] ?? "");
    const outcome = await deps.oauth.callback(query);
    const body = outcome.ok
      ? html`<h1 class="ok">${outcome.title}</h1><p>${outcome.message}</p>`
      : html`<h1 class="fail">${outcome.title}</h1><p>${outcome.message}</p>${outcome.hint ? html`<p>${outcome.hint}</p>` : ""}`;
    return sendPage(reply, outcome.ok ? 200 : 400, outcome.title, body);
  });
}
