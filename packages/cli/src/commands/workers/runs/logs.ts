import { defineCommand } from "../../../define-command.js";

export default defineCommand({
  summary: "Show the logs of a run",
  args: [{ name: "RUN_ID", description: "The ID of the run", required: true }],
  workerIdOption: true,
  async run(ctx) {
    const { logs } = await ctx.api().call("GetRunLogs", { workerId: ctx.workerId(), runId: ctx.args.RUN_ID as string });
    ctx.out.raw(logs);
  },
});
