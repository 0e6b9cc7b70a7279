import type { FastifyInstance, FastifyReply } from "fastify";
import { AppError, isAppError } from "../errors.js";
import { html, sendPage } from "./html.js";
import type { WebDeps } from "./routes.js";

/**
 * The page behind CliLoginInit's `browserUrl`: a person holding an API token of a workspace
 * approves the waiting CLI, which then redeems a token of its own.
 */
export function registerLoginPages(app: FastifyInstance, deps: Pick<WebDeps, "tokens" | "login">): void {
  /** The session behind a link, or the page that says why there is none to approve. */
  async function openSession(browserId: string, reply: FastifyReply) {
    let session;
    try {
      if (!/^[\w-]{1,100}$/.test(browserId)) throw new AppError("login_session_not_found", "Unknown login link.");
      session = await deps.login.describe(browserId);
    } catch (error) {
      if (!isAppError(error)) throw error;
      sendPage(reply, 404, "Login link not found", html`<h1 class="fail">This login link is unknown or has expired.</h1><p>Run <code>ntn login</code> again.</p>`);
      return undefined;
    }
    if (session.state !== "open") {
      const message = session.state === "approved" ? "This login was already approved." : "This login link has expired.";
      sendPage(reply, 410, "Login link used", html`<h1>${message}</h1><p>Return to your terminal.</p>`);
      return undefined;
    }
    return session;
  }

  app.get("/cli-login/:browserId", async (request, reply) => {
    const { browserId } = request.params as { browserId: string };
    const session = await openSession(browserId, reply);
    if (!session) return reply;
    return sendPage(
      reply,
      200,
      "Approve CLI login",
      html`<h1>Log in the ntn CLI</h1>
<p>Check that your terminal shows this code:</p><p class="code">${session.verificationCode}</p>
<form method="post" action="/cli-login/${browserId}">
<label for="token">An API token of the workspace to log in to (for the first workspace, the contents of <code>&lt;data dir&gt;/admin-token</code>):</label>
<input id="token" name="token" type="password" autocomplete="off" required>
<button type="submit">Approve</button></form>`,
    );
  });

  app.post("/cli-login/:browserId", async (request, reply) => {
    const { browserId } = request.params as { browserId: string };
    const token = (request.body as Record<string, string> | undefined)?.token?.trim();
    if (!(await openSession(browserId, reply))) return reply;
    try {
      const caller = await deps.tokens.authenticate(token);
      await deps.login.approve(browserId, caller);
      return sendPage(
        reply,
        200,
        "CLI login approved",
        html`<h1 class="ok">Approved.</h1><p>The CLI is now logged in to workspace <strong>${caller.workspaceName}</strong>. You can close this page and return to your terminal.</p>`,
      );
    } catch (error) {
      if (!isAppError(error)) throw error;
      return sendPage(reply, error.status, "CLI login failed", html`<h1 class="fail">Not approved</h1><p>${error.message}</p><p><a href="/cli-login/${browserId}">Try again</a></p>`);
    }
  });
}
