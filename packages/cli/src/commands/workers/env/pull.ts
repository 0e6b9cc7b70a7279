import fs from "node:fs";
import path from "node:path";
import { defineCommand } from "../../../define-command.js";
import { LocalError } from "../../../errors.js";
import { expiryComment, mergeEnv, renderLine } from "../../../dotenv-file.js";

export default defineCommand({
  summary: "Pull remote environment variables into a local .env file",
  description:
    "Pull remote environment variables into a local .env file: every secret, and a fresh access token " +
    "for each connected OAuth capability (refreshed first when near expiry, or when its expiry is unknown; " +
    "--refresh refreshes every one). Existing files are merged: comments and other variables stay.",
  args: [{ name: "WORKER_ID", description: "The ID of the worker (reads from workers.json if omitted)" }],
  options: [
    { flags: "--file <FILE>", description: "Path to the .env file to write", default: ".env" },
    { flags: "--no-file", description: "Print env vars to stdout instead of writing to a file" },
    { flags: "--yes", description: "Skip confirmation prompt" },
    { flags: "--refresh", description: "Refresh every OAuth access token first (after an API rejected one)" },
  ],
  async run(ctx) {
    const workerId = ctx.workerId(ctx.args.WORKER_ID as string | undefined);
    const pulled = await ctx.api().call("PullEnv", { workerId, ...(ctx.opts.refresh ? { refresh: true } : {}) });
    for (const notice of pulled.notices ?? []) ctx.out.warn(notice.message);
    const remote = new Map(pulled.env.map((e) => [e.key, e.value]));
    const comments = new Map<string, string>();
    for (const entry of pulled.env) if (entry.expiresAt) comments.set(entry.key, expiryComment(entry.key, entry.expiresAt));

    if (ctx.opts.file === false) {
      if (!ctx.opts.yes) {
        ctx.out.warn("This will print potentially secret values to the terminal.");
        if (!(await ctx.confirm("? Continue?"))) return;
      }
      for (const key of [...remote.keys()].sort()) ctx.out.data(renderLine(key, remote.get(key)!));
      return;
    }

    const shown = ctx.opts.file as string;
    const file = path.resolve(ctx.cwd, shown);
    let existing: string | undefined;
    try {
      existing = fs.readFileSync(file, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw new LocalError(`Failed to read ${shown}`, { cause: error });
    }
    // A token variable the server sent a notice for instead of a value is dead: it leaves the file.
    const dead = new Set((pulled.notices ?? []).map((n) => n.key).filter((key) => !remote.has(key)));
    const plan = mergeEnv(existing ?? "", remote, comments, dead);
    if (existing !== undefined) {
      if (plan.content === existing) {
        ctx.out.success(`${shown} is already up to date`);
        return;
      }
      if (plan.added.length + plan.changed.length + plan.removed.length > 0 && !ctx.opts.yes) {
        ctx.out.status(`The following changes will be made to ${shown}:`);
        for (const key of plan.added) ctx.out.status(`  + ${key}`);
        for (const key of plan.changed) ctx.out.status(`  ~ ${key}`);
        for (const key of plan.removed) ctx.out.status(`  - ${key}`);
        if (!(await ctx.confirm("? Apply changes?"))) return;
      }
    }
    try {
      // In place: an existing file keeps its mode; a new one gets 0644 (less the umask), as the official CLI's.
      fs.writeFileSync(file, plan.content);
    } catch (error) {
      throw new LocalError(`Failed to write ${shown}`, { cause: error });
    }
    ctx.out.success(`Environment variables written to ${shown}`);
  },
});
