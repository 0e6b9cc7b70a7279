import { defineCommand } from "../../define-command.js";

export default defineCommand({
  summary: "Revoke an API token",
  args: [{ name: "TOKEN_ID", description: "ID of the token to revoke", required: true }],
  options: [{ flags: "--yes", description: "Skip confirmation prompt" }],
  async run(ctx) {
    const tokenId = ctx.args.TOKEN_ID as string;
    if (!ctx.opts.yes && !(await ctx.confirm(`? Revoke token ${tokenId}?`))) {
      ctx.out.status("Cancelled.");
      return;
    }
    await ctx.api().call("RevokeToken", { tokenId });
    ctx.out.success("Token revoked");
  },
});
