import { defineCommand } from "../../../define-command.js";

export default defineCommand({
  summary: "List the webhooks of a worker: their URLs, status and last delivery",
  aliases: ["ls"],
  args: [{ name: "WORKER_ID", description: "The ID of the worker (reads from workers.json if omitted)" }],
  formats: true,
  async run(ctx) {
    const { webhooks } = await ctx.api().call("ListWebhooks", { workerId: ctx.workerId(ctx.args.WORKER_ID as string | undefined) });
    const rows = webhooks.map((w) => [
      w.key,
      w.url,
      w.status === "blocked" ? `blocked (${w.verificationFailures} failed verifications in a row)` : w.status,
      w.lastDelivery ? `${w.lastDelivery.status} (${w.lastDelivery.receivedAt})` : "none",
    ]);
    ctx.out.table(ctx.format(), ["KEY", "URL", "STATUS", "LAST DELIVERY"], rows, webhooks, "No webhooks found for this worker.");
  },
});
