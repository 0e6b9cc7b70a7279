import { defineCommand, type CommandSpec } from "../../../define-command.js";

function toggle(enabled: boolean): CommandSpec {
  return defineCommand({
    summary: enabled
      ? "Turn a webhook's verification on: its verify handler runs, and verification failures count toward a block"
      : "Turn a webhook's verification off: no verify handler, and verification failures never block",
    args: [{ name: "KEY", description: "The webhook capability key", required: true }],
    workerIdOption: true,
    async run(ctx) {
      const key = ctx.args.KEY as string;
      await ctx.api().call("SetWebhookVerification", { workerId: ctx.workerId(), key, enabled });
      ctx.out.success(`Verification ${enabled ? "enabled" : "disabled"} for ${key}`);
    },
  });
}

export const enable = toggle(true);
export const disable = toggle(false);
