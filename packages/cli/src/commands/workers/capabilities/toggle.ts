import { defineCommand, type CommandSpec } from "../../../define-command.js";

/** `capabilities enable` and `disable`: one command body, two registry entries. */
function toggle(disabled: boolean): CommandSpec {
  return defineCommand({
    summary: `${disabled ? "Disable" : "Enable"} a sync capability`,
    args: [{ name: "KEY", description: "Capability key", required: true }],
    workerIdOption: true,
    async run(ctx) {
      const key = ctx.args.KEY as string;
      await ctx.api().call("UpdateSyncCapabilityDisabled", { workerId: ctx.workerId(), capabilityKey: key, disabled });
      ctx.out.success(`${disabled ? "Disabled" : "Enabled"} sync capability '${key}'`);
    },
  });
}

export const enable = toggle(false);
export const disable = toggle(true);
