import { defineCommand } from "../define-command.js";

export default defineCommand({
  summary: "Show the server, workspace and token this CLI uses",
  options: [{ flags: "--json", description: "Output as JSON" }],
  async run(ctx) {
    const { baseUrl } = ctx.connection();
    const me = await ctx.api().call("WhoAmI", {});
    const view = { url: baseUrl, workspaceId: me.workspaceId, workspaceName: me.workspaceName, tokenName: me.tokenName };
    if (ctx.opts.json) return ctx.out.json(view);
    ctx.out.fields([
      ["Server", baseUrl],
      ["Workspace", `${me.workspaceName} (${me.workspaceId})`],
      ["Token", `${me.tokenName}${me.role === "admin" ? " (admin)" : ""}`],
    ]);
  },
});
