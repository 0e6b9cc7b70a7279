import { defineCommand } from "../../define-command.js";

export default defineCommand({
  summary: "Get a worker by ID",
  args: [{ name: "WORKER_ID", description: "The ID of the worker (reads from workers.json if omitted)" }],
  formats: true,
  async run(ctx) {
    const { worker } = await ctx.api().call("GetWorker", { workerId: ctx.workerId(ctx.args.WORKER_ID as string | undefined) });
    const format = ctx.format();
    if (format === "json") return ctx.out.json(worker);
    if (format === "plain") return ctx.out.data([worker.workerId, worker.name, worker.spaceId, worker.createdAt, worker.updatedAt].join("\t"));
    ctx.out.fields([
      ["ID", worker.workerId],
      ["Name", worker.name],
      ["Space ID", worker.spaceId],
      ["Created at", worker.createdAt],
      ["Updated at", worker.updatedAt],
    ]);
  },
});
