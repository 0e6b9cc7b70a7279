import { defineCommand } from "../../define-command.js";

export default defineCommand({
  summary: "List API tokens",
  aliases: ["ls"],
  formats: true,
  async run(ctx) {
    const { tokens } = await ctx.api().call("ListTokens", {});
    ctx.out.table(
      ctx.format(),
      ["ID", "NAME", "ISSUED AT", "EXPIRES AT", "REVOKED AT"],
      tokens.map((t) => [t.id, t.name, t.issuedAt, t.expiresAt, t.revokedAt ?? ""]),
      tokens.map((t) => ({ id: t.id, name: t.name, issuedAt: t.issuedAt, expiresAt: t.expiresAt, revokedAt: t.revokedAt ?? null })),
      "No tokens found in this workspace.",
    );
  },
});
