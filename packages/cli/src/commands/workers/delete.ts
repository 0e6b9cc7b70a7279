import { defineCommand } from "../../define-command.js";

export default defineCommand({
  summary: "Delete a worker",
  aliases: ["rm"],
  args: [{ name: "WORKER_ID", description: "The ID of the worker (reads from workers.json if omitted)" }],
  options: [{ flags: "--yes", description: "Skip confirmation prompt" }],
  async run(ctx) {
    const workerId = ctx.workerId(ctx.args.WORKER_ID as string | undefined);
    if (!ctx.opts.yes && !(await ctx.confirm(`? Delete worker ${workerId}? Its secrets, deployments, runs and connections go with it.`))) {
      ctx.out.status("Cancelled.");
      return;
    }
    await ctx.api().call("DeleteWorker", { workerId });
    ctx.out.success("Worker deleted");
  },
});
