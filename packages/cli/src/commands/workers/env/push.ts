import fs from "node:fs";
import path from "node:path";
import { defineCommand } from "../../../define-command.js";
import { LocalError } from "../../../errors.js";
import { envEntries } from "../../../dotenv-file.js";

/** The runtime's token variables: the server manages them, so push leaves them out. */
const RUNTIME_VARIABLE = /^OAUTH_[0-9A-F]+_ACCESS_TOKEN$/;

export default defineCommand({
  summary: "Push local .env variables to the remote environment",
  description:
    "Push local .env variables to the remote environment. Variables only on the server stay; OAuth " +
    "access tokens (OAUTH_..._ACCESS_TOKEN) are the server's and are not pushed.",
  args: [{ name: "WORKER_ID", description: "The ID of the worker (reads from workers.json if omitted)" }],
  options: [
    { flags: "--file <FILE>", description: "Path to the .env file to read", default: ".env" },
    { flags: "--yes", description: "Skip confirmation prompt" },
  ],
  async run(ctx) {
    const workerId = ctx.workerId(ctx.args.WORKER_ID as string | undefined);
    const shown = ctx.opts.file as string;
    let text: string;
    try {
      text = fs.readFileSync(path.resolve(ctx.cwd, shown), "utf8");
    } catch (error) {
      throw new LocalError(`Failed to read ${shown}`, { cause: error });
    }
    const local = new Map([...envEntries(text)].filter(([key]) => !RUNTIME_VARIABLE.test(key)));
    const api = ctx.api();
    const remote = new Map((await api.call("PullEnv", { workerId })).env.map((e) => [e.key, e.value]));
    const added = [...local.keys()].filter((k) => !remote.has(k)).sort();
    const changed = [...local.keys()].filter((k) => remote.has(k) && remote.get(k) !== local.get(k)).sort();
    if (added.length + changed.length === 0) {
      ctx.out.success("Remote environment variables are already up to date");
      return;
    }
    if (!ctx.opts.yes) {
      ctx.out.status("The following changes will be pushed to the remote environment:");
      for (const key of added) ctx.out.status(`  + ${key}`);
      for (const key of changed) ctx.out.status(`  ~ ${key}`);
      if (!(await ctx.confirm("? Push changes?"))) return;
    }
    const result = await api.call("UpsertSecrets", { workerId, secrets: [...local].map(([key, value]) => ({ key, value })) });
    ctx.out.success("Environment variables pushed successfully");
    for (const warning of result.warnings ?? []) ctx.out.warn(warning);
  },
});
