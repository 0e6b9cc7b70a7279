import { defineCommand } from "../../define-command.js";

export default defineCommand({
  summary: "Create a new API token",
  args: [{ name: "NAME", description: "Name of the token", required: true }],
  options: [
    { flags: "--expires-in <EXPIRES_IN>", description: 'How long the token lasts, e.g. "30 days", "12h", "never"' },
    { flags: "--plain", description: "Print only the token" },
  ],
  async run(ctx) {
    const body: { name: string; expiresIn?: string } = { name: ctx.args.NAME as string };
    if (ctx.opts.expiresIn) body.expiresIn = ctx.opts.expiresIn as string;
    const created = await ctx.api().call("CreateToken", body);
    ctx.out.data(created.token);
    if (ctx.opts.plain) return;
    ctx.out.success("Token created");
    ctx.out.status("Warning: Save this token now — it will not be shown again.");
    ctx.out.status("");
  },
});
