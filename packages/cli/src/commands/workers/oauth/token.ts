import { defineCommand } from "../../../define-command.js";

export default defineCommand({
  summary: "Show a valid access token of an OAuth capability (refreshed first if near expiry or of unknown expiry)",
  args: [{ name: "KEY", description: "The OAuth capability key", required: true }],
  options: [
    { flags: "--json", description: "Output as JSON" },
    { flags: "--plain", description: "Output the token alone" },
    { flags: "--refresh", description: "Refresh the token first, whatever its expiry" },
  ],
  workerIdOption: true,
  async run(ctx) {
    const key = ctx.args.KEY as string;
    const token = await ctx.api().call("GetOauthToken", { workerId: ctx.workerId(), oauthCapabilityKey: key, ...(ctx.opts.refresh ? { refresh: true } : {}) });
    if (ctx.opts.json) return ctx.out.json({ accessToken: token.accessToken, expiresAt: token.expiresAt ?? null });
    if (ctx.opts.plain) return ctx.out.data(token.accessToken);
    const rows: [string, string][] = [["ACCESS TOKEN", token.accessToken]];
    if (token.expiresAt) rows.push(["EXPIRES AT", token.expiresAt]);
    const width = Math.max(...rows.map(([label]) => label.length)) + 2;
    for (const [label, value] of rows) ctx.out.data(`${label.padEnd(width)}${value}`);
  },
});
