import { defineCommand } from "../../../define-command.js";

export default defineCommand({
  summary: "List environment variables (names and dates, never values)",
  aliases: ["ls"],
  args: [{ name: "WORKER_ID", description: "The ID of the worker (reads from workers.json if omitted)" }],
  formats: true,
  async run(ctx) {
    const { secrets } = await ctx.api().call("ListSecrets", { workerId: ctx.workerId(ctx.args.WORKER_ID as string | undefined) });
    ctx.out.table(
      ctx.format(),
      ["KEY", "CREATED AT"],
      secrets.map((s) => [s.key, s.createdAt]),
      secrets.map((s) => ({ key: s.key, createdAt: s.createdAt })),
      "No environment variables found for this worker.",
    );
  },
});
