import type { FastifyInstance } from "fastify";
import type { TokenService } from "../auth/tokens.js";
import type { LoginService } from "../login/service.js";
import type { OAuthService } from "../oauth/service.js";
import { html, sendPage } from "./html.js";
import { registerLoginPages } from "./login.js";
import { registerOAuthCallback } from "./oauth-callback.js";

/** What the pages call into; built once in main.ts. */
export interface WebDeps {
  /** The public base URL (no trailing slash), known once the server listens. */
  publicUrl(): string;
  tokens: Pick<TokenService, "authenticate">;
  login: Pick<LoginService, "describe" | "approve">;
  oauth: Pick<OAuthService, "callback">;
}

/**
 * Every server-rendered page (the home page, CLI login approval, the OAuth callback), in a plugin
 * of their own: forms post urlencoded bodies (read with the standard URLSearchParams), and only
 * these routes accept them; the API takes JSON alone.
 */
export function registerWeb(app: FastifyInstance, deps: WebDeps): void {
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
    registerOAuthCallback(web, deps);
  });
}
