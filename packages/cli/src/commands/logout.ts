import { normaliseUrl, readState, removeLogin } from "../config.js";
import { defineCommand } from "../define-command.js";

export default defineCommand({
  summary: "Log out of a Workyard server",
  args: [{ name: "URL", description: "The server to log out of (default: the current login)" }],
  async run(ctx) {
    const given = ctx.args.URL as string | undefined;
    const url = given ? normaliseUrl(given) : readState(ctx.env).current;
    if (!url || !removeLogin(url, ctx.env)) {
      ctx.out.status(url ? `Not logged in to ${url}.` : "Not logged in.");
      return;
    }
    ctx.out.success(`Logged out of ${url}`);
  },
});
