import { defineCommand } from "../../../define-command.js";

export default defineCommand({
  summary: "Remove an environment variable",
  aliases: ["delete", "rm"],
  args: [{ name: "KEY", description: "The variable to remove", required: true }],
  workerIdOption: true,
  async run(ctx) {
    const key = ctx.args.KEY as string;
    const result = await ctx.api().call("DeleteSecret", { workerId: ctx.workerId(), key });
    ctx.out.success(`Unset environment variable '${key}'`);
    for (const warning of result.warnings ?? []) ctx.out.warn(warning);
  },
});
