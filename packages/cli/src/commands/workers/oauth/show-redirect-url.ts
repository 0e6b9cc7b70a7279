import { ApiClient } from "../../../api-client.js";
import { readState } from "../../../config.js";
import { defineCommand } from "../../../define-command.js";
import { AuthError } from "../../../errors.js";

export default defineCommand({
  summary: "Show the OAuth redirect URL to register with providers",
  description:
    "Show the OAuth redirect URL to register with providers: <server public URL>/workers/oauth/callback. " +
    "Ours asks the server; the official CLI computes it from NOTION_API_BASE_URL, so use the server's public URL there.",
  async run(ctx) {
    const base = ctx.env.NOTION_API_BASE_URL?.replace(/\/+$/, "") || readState(ctx.env).current;
    if (!base) {
      throw new AuthError("Not logged in to a Workyard server.", { hint: "Run `ntn login <server url>`, or set NOTION_API_BASE_URL." });
    }
    const computed = `${base}/workers/oauth/callback`;
    let redirectUrl = computed;
    try {
      redirectUrl = (await new ApiClient(base, undefined).call("GetServerInfo", {})).redirectUrl;
    } catch {
      // The server is not reachable: the URL the official CLI would print is still right when
      // the base URL is the server's public URL.
    }
    ctx.out.data(redirectUrl);
    if (redirectUrl !== computed) {
      ctx.out.warn(
        `The server's public URL differs from ${base}; the official CLI would print ${computed}.`,
        "Register the URL above, and point NOTION_API_BASE_URL at the server's public URL.",
      );
    }
  },
});
