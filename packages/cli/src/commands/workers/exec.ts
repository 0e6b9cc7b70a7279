import path from "node:path";
import { defineCommand } from "../../define-command.js";
import { UserError } from "../../errors.js";
import { readRunInput } from "../../input.js";
import { sortedJson } from "../../json.js";
import { runLocally } from "../../local-run.js";

const RUNS_HINT = "Run `ntn workers runs list` to see recent runs, or `ntn workers runs logs <run-id>` to view logs.";

export default defineCommand({
  summary: "Execute a worker capability",
  args: [{ name: "KEY", description: "Capability key to execute", required: true }],
  options: [
    { flags: "-d, --data <DATA>", description: "JSON input data (reads from stdin if not provided and stdin is not a TTY)" },
    { flags: "--stream", description: "Stream the output" },
    { flags: "-l, --local", description: "Execute the capability locally (Node 20+, no tsx needed)" },
    { flags: "--dotenv <DOTENV>", description: "Path to an env file to load (default: .env)" },
    { flags: "--no-dotenv", description: "Skip loading .env file" },
  ],
  workerIdOption: true,
  async run(ctx) {
    const key = ctx.args.KEY as string;
    const input = await readRunInput(ctx.opts.data as string | undefined, ctx.stdin);

    if (ctx.opts.local) {
      const dotenv = ctx.opts.dotenv === false ? undefined : path.resolve(ctx.cwd, (ctx.opts.dotenv as string | undefined) ?? ".env");
      const value = await runLocally({ cwd: ctx.cwd, key, input, dotenvFile: dotenv, env: ctx.env, out: ctx.out, verbose: ctx.globals.verbose });
      ctx.out.data(sortedJson(value));
      return;
    }

    const api = ctx.api();
    const workerId = ctx.workerId();
    if (!ctx.opts.stream) {
      const { result } = await api.call("RunCapability", { workerId, capabilityKey: key, args: input, stream: false });
      ctx.out.data(sortedJson(result));
      return;
    }
    let failed = false;
    let runId: string | undefined;
    for await (const line of api.stream("RunCapability", { workerId, capabilityKey: key, args: input, stream: true })) {
      if (line._tag === "run") runId = line.runId;
      else if (line._tag === "log") ctx.out.status(`${line.event.stream === "stderr" ? "[worker:err]" : "[worker]"} ${line.event.data}`);
      else if (line._tag === "result") ctx.out.data(sortedJson(line.result));
      else if (line._tag === "error") {
        failed = true;
        for (const [i, text] of line.error.split("\n").entries()) ctx.out.status(i === 0 ? `error: ${text}` : `  ${text}`);
      }
    }
    if (failed) throw new UserError("Run failed.", { hint: runId ? `Run \`ntn workers runs logs ${runId}\` to view its logs.` : RUNS_HINT });
  },
});
