import { defineCommand } from "../../../define-command.js";

export default defineCommand({
  summary: "Give a webhook a new URL; the old one stops working at once",
  args: [{ name: "KEY", description: "The webhook capability key", required: true }],
  options: [{ flags: "--yes", description: "Skip confirmation prompt" }],
  workerIdOption: true,
  async run(ctx) {
    const key = ctx.args.KEY as string;
    const workerId = ctx.workerId();
    if (!ctx.opts.yes && !(await ctx.confirm(`? Give ${key} a new URL? Senders using the current one will get 404.`))) return;
    const { url } = await ctx.api().call("RotateWebhook", { workerId, key });
    ctx.out.success(`New URL for ${key}; update the sender`);
    ctx.out.data(url);
  },
});
