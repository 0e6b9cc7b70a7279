import { defineCommand } from "../../define-command.js";
import { createWorker } from "../../worker-project.js";

export default defineCommand({
  summary: "Create a worker without deploying",
  options: [{ flags: "--name <NAME>", description: "Name of the worker (prompted for on a terminal when omitted)" }],
  async run(ctx) {
    await createWorker(ctx, ctx.opts.name as string | undefined);
    ctx.out.success("Worker created");
  },
});
