import { defineCommand } from "../../../define-command.js";

export default defineCommand({
  summary: "List recent runs of a worker",
  aliases: ["ls"],
  args: [{ name: "WORKER_ID", description: "The ID of the worker (reads from workers.json if omitted)" }],
  formats: true,
  async run(ctx) {
    const { runs } = await ctx.api().call("ListRunsForWorker", { workerId: ctx.workerId(ctx.args.WORKER_ID as string | undefined) });
    ctx.out.table(
      ctx.format(),
      ["RUN ID", "NAME", "STATUS", "EXIT CODE", "DURATION", "STARTED AT", "ENDED AT"],
      runs.map((r) => [
        r.runId,
        r.name,
        r.status ?? "-",
        r.exitCode === null || r.exitCode === undefined ? "-" : String(r.exitCode),
        r.durationMs === null || r.durationMs === undefined ? "-" : `${r.durationMs}ms`,
        r.startedAt,
        r.endedAt ?? "-",
      ]),
      runs,
      "No runs found for this worker.",
    );
  },
});
