import { defineCommand } from "../../../define-command.js";

export default defineCommand({
  summary: "Run a delivery again, with the same delivery id",
  args: [{ name: "DELIVERY_ID", description: "The delivery to run again (see `webhooks deliveries`)", required: true }],
  workerIdOption: true,
  async run(ctx) {
    const deliveryId = ctx.args.DELIVERY_ID as string;
    await ctx.api().call("RedeliverWebhook", { workerId: ctx.workerId(), deliveryId });
    ctx.out.success(`Queued delivery ${deliveryId} again`);
  },
});
