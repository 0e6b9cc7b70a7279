import { ApiClient } from "../api-client.js";
import { openBrowser } from "../browser.js";
import { normaliseUrl, readState, saveLogin } from "../config.js";
import { defineCommand } from "../define-command.js";
import { AuthError, UserError } from "../errors.js";

async function readStdin(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Buffer));
  return Buffer.concat(chunks).toString("utf8");
}

export default defineCommand({
  summary: "Log in to a Workyard server",
  description:
    "Log in to a Workyard server. On a terminal, approve the login in the browser page it opens; " +
    "otherwise pipe an API token into --with-token.",
  args: [{ name: "URL", description: "The server's base URL (default: NOTION_API_BASE_URL, the current login, or http://127.0.0.1:7777)" }],
  options: [{ flags: "--with-token", description: "Read an API token from stdin instead of approving in a browser" }],
  async run(ctx) {
    const url = normaliseUrl(
      (ctx.args.URL as string | undefined) ?? ctx.env.NOTION_API_BASE_URL ?? readState(ctx.env).current ?? "http://127.0.0.1:7777",
    );
    let token: string;
    if (ctx.opts.withToken) {
      token = (await readStdin(ctx.stdin)).trim();
      if (!token) throw new UserError("No token on stdin.", { hint: `Run: ntn login ${url} --with-token < token-file` });
    } else {
      if (!ctx.interactive()) {
        throw new AuthError("Cannot open browser for login in a non-interactive environment.", {
          hint: `Pipe an API token into \`ntn login ${url} --with-token\`, or set NOTION_API_TOKEN and NOTION_WORKSPACE_ID.`,
        });
      }
      const anonymous = new ApiClient(url, undefined);
      const session = await anonymous.call("CliLoginInit", {});
      ctx.out.status(`Your verification code: ${session.verificationCode}`);
      ctx.out.status(`Approve this login in your browser:\n  ${session.browserUrl}`);
      await openBrowser(session.browserUrl, ctx.env);
      ctx.out.status("Waiting for approval... (Ctrl-C to cancel)");
      for (;;) {
        const answer = await anonymous.call("CliLoginRedeem", { sessionId: session.sessionId });
        if (answer.status === "confirmed") {
          token = answer.token;
          break;
        }
        if (answer.status === "expired") throw new UserError("The login expired before it was approved.", { hint: "Run `ntn login` again." });
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
    const me = await new ApiClient(url, token).call("WhoAmI", {});
    saveLogin(url, { token, workspaceId: me.workspaceId, workspaceName: me.workspaceName, tokenName: me.tokenName }, ctx.env);
    ctx.out.success(`Logged in to ${url} (workspace ${me.workspaceName})`);
  },
});
