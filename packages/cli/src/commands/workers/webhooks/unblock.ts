import { defineCommand } from "../../../define-command.js";

export default defineCommand({
  summary: "Take deliveries again on a webhook blocked after failed verifications",
  args: [{ name: "KEY", description: "The webhook capability key", required: true }],
  workerIdOption: true,
  async run(ctx) {
    const key = ctx.args.KEY as string;
    await ctx.api().call("UnblockWebhook", { workerId: ctx.workerId(), key });
    ctx.out.success(`Unblocked ${key}`);
  },
});
