import { defineCommand } from "../../../define-command.js";

export default defineCommand({
  summary: "Revoke an OAuth connection (at the provider where it can) and delete its tokens",
  args: [{ name: "KEY", description: "The OAuth capability key", required: true }],
  options: [{ flags: "--yes", description: "Skip confirmation prompt" }],
  workerIdOption: true,
  async run(ctx) {
    const key = ctx.args.KEY as string;
    const workerId = ctx.workerId();
    if (!ctx.opts.yes && !(await ctx.confirm(`? Revoke ${key} and delete its tokens?`))) return;
    const result = await ctx.api().call("RevokeOauth", { workerId, oauthCapabilityKey: key });
    if (result.message) ctx.out.warn(result.message);
    ctx.out.success(result.revokedAtProvider ? `Revoked ${key} at the provider and deleted its tokens` : `Deleted the tokens of ${key}`);
  },
});
