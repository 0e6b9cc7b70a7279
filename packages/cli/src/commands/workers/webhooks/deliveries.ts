import { defineCommand } from "../../../define-command.js";

export default defineCommand({
  summary: "List a webhook's recent deliveries: status, attempts and the runs that made them",
  args: [{ name: "KEY", description: "The webhook capability key", required: true }],
  formats: true,
  workerIdOption: true,
  async run(ctx) {
    const { deliveries } = await ctx.api().call("ListWebhookDeliveries", { workerId: ctx.workerId(), key: ctx.args.KEY as string });
    ctx.out.table(
      ctx.format(),
      ["DELIVERY ID", "STATUS", "ATTEMPTS", "RECEIVED AT", "RUN IDS", "ERROR"],
      deliveries.map((d) => [d.deliveryId, d.status, String(d.attempts), d.receivedAt, d.runIds.join(",") || "-", d.error ?? "-"]),
      deliveries,
      "No deliveries yet for this webhook.",
    );
  },
});
