import { defineCommand } from "../../define-command.js";

export default defineCommand({
  summary: "List all workers in the current workspace",
  aliases: ["ls"],
  formats: true,
  async run(ctx) {
    const { workers } = await ctx.api().call("ListWorkers", {});
    ctx.out.table(
      ctx.format(),
      ["ID", "NAME", "CREATED", "UPDATED"],
      workers.map((w) => [w.workerId, w.name, w.createdAt, w.updatedAt]),
      workers,
      "No workers found in this workspace.",
    );
  },
});
