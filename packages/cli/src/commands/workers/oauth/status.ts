import type { ConnectionStatusView } from "@workyard/server/contract";
import { defineCommand } from "../../../define-command.js";

function describeExpiry(c: ConnectionStatusView): string {
  if (c.status === "not_connected") return "-";
  if (!c.expiresAt) return "does not expire";
  if (c.expirySource === "default") {
    return `unknown (no expires_in, no accessTokenExpireMs): refreshed every ${Math.round(c.defaultRefreshIntervalMs / 60000)} min and before each token read or env pull`;
  }
  const source = c.expirySource === "config" ? " (accessTokenExpireMs)" : c.expirySource === "catalog" ? " (the provider's usual lifetime)" : "";
  return `${c.expiresAt}${source}`;
}

export default defineCommand({
  summary: "Show the state of a worker's OAuth connections",
  description:
    "Show each OAuth capability's connection: connected, expiry, last and next refresh, whether it needs " +
    "re-authorization, and the last error.",
  args: [{ name: "KEY", description: "Only this OAuth capability" }],
  formats: true,
  workerIdOption: true,
  async run(ctx) {
    const key = ctx.args.KEY as string | undefined;
    const { connections } = await ctx.api().call("GetOauthStatus", { workerId: ctx.workerId(), ...(key ? { oauthCapabilityKey: key } : {}) });
    ctx.out.table(
      ctx.format(),
      ["KEY", "STATUS", "EXPIRES AT", "LAST REFRESH", "NEXT REFRESH", "LAST ERROR"],
      connections.map((c) => [
        c.key,
        c.status === "needs_reauthorization" ? "needs re-authorization" : c.status.replace("_", " "),
        describeExpiry(c),
        c.lastRefreshAt ?? "-",
        c.nextRefreshAt ?? "-",
        c.lastError ?? "-",
      ]),
      connections,
      "This worker has no OAuth capabilities.",
    );
    for (const c of connections) {
      if (c.status === "needs_reauthorization") ctx.out.status(`hint: run \`ntn workers oauth start ${c.key}\` to re-authorize ${c.key}.`);
      if (c.status === "not_connected" && ctx.format() === "table") ctx.out.status(`hint: run \`ntn workers oauth start ${c.key}\` to connect ${c.key}.`);
    }
  },
});
