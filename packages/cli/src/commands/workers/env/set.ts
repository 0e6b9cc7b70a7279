import { defineCommand } from "../../../define-command.js";
import { UserError } from "../../../errors.js";

export default defineCommand({
  summary: "Set environment variables",
  args: [{ name: "VARS", description: "Variables in KEY=VALUE format", required: true, variadic: true }],
  workerIdOption: true,
  async run(ctx) {
    const secrets = (ctx.args.VARS as string[]).map((item) => {
      const eq = item.indexOf("=");
      if (eq < 0) throw new UserError(`Invalid format '${item}': expected KEY=VALUE`);
      if (eq === 0) throw new UserError(`Invalid format '${item}': key must not be empty`);
      return { key: item.slice(0, eq), value: item.slice(eq + 1) };
    });
    const result = await ctx.api().call("UpsertSecrets", { workerId: ctx.workerId(), secrets });
    const ignored = result.ignored ?? [];
    for (const key of ignored) {
      ctx.out.warn(`${key} is the runtime's OAuth access token variable; it was not stored.`, "The server sets it for each run; `ntn workers env pull` fetches a fresh one.");
    }
    const stored = secrets.filter((s) => !ignored.includes(s.key));
    if (stored.length === 1) ctx.out.success(`Set environment variable '${stored[0]!.key}'`);
    else if (stored.length > 1) ctx.out.success(`Set ${stored.length} environment variables`);
    // The live deployment re-read with the new values: what went wrong there (the values stay set).
    for (const warning of result.warnings ?? []) ctx.out.warn(warning);
  },
});
