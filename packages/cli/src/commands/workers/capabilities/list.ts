import { defineCommand } from "../../../define-command.js";

export default defineCommand({
  summary: "List capabilities of a worker",
  aliases: ["ls"],
  args: [{ name: "WORKER_ID", description: "The ID of the worker (reads from workers.json if omitted)" }],
  formats: true,
  async run(ctx) {
    const { capabilities } = await ctx.api().call("ListCapabilities", { workerId: ctx.workerId(ctx.args.WORKER_ID as string | undefined) });
    const withStatus = capabilities.some((c) => c.connection);
    const headers = withStatus ? ["TYPE", "KEY", "CONNECTION"] : ["TYPE", "KEY"];
    const rows = capabilities.map((c) => {
      const row = [c._tag, c.key];
      if (withStatus) row.push(c.connection ? `${c.connection.status}${c.connection.expiresAt ? ` (expires ${c.connection.expiresAt})` : ""}` : "");
      return row;
    });
    ctx.out.table(ctx.format(), headers, rows, capabilities, "No capabilities found for this worker.");
  },
});
