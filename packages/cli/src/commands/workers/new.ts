import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { defineCommand } from "../../define-command.js";
import { LocalError, UserError } from "../../errors.js";
import { scaffoldFiles } from "../../scaffold.js";

/** Runs git or npm in the invocation's environment (which, in-process, is not this process's). */
function run(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv, onOutput: (text: string) => void): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    child.stdout.on("data", (c: Buffer) => onOutput(c.toString("utf8")));
    child.stderr.on("data", (c: Buffer) => onOutput(c.toString("utf8")));
    child.on("error", () => resolve(127));
    child.on("close", (code) => resolve(code ?? 1));
  });
}

export default defineCommand({
  summary: "Initialize a new worker project",
  args: [{ name: "DIRECTORY", description: "Directory to create the worker project in (default: the current one)" }],
  options: [
    { flags: "--force", description: "Overwrite conflicting files" },
    { flags: "--git", description: "Initialize a git repository (default when git is available)" },
    { flags: "--no-git", description: "Skip git initialization" },
    { flags: "--install", description: "Install dependencies after initialization (default)" },
    { flags: "--no-install", description: "Skip dependency installation" },
    { flags: "--alpha", description: "Accepted for compatibility; Workyard's template has no alpha variant", hidden: true },
  ],
  async run(ctx) {
    const given = ctx.args.DIRECTORY as string | undefined;
    const dir = path.resolve(ctx.cwd, given ?? ".");
    const name = path.basename(dir);
    const files = scaffoldFiles(name);
    const conflicts = Object.keys(files).filter((file) => fs.existsSync(path.join(dir, file)));
    if (conflicts.length > 0 && !ctx.opts.force) {
      throw new UserError(`${given ?? "This directory"} already has ${conflicts.join(", ")}.`, {
        hint: "Use --force to overwrite them, or pick another directory.",
      });
    }
    try {
      for (const [file, content] of Object.entries(files)) {
        fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
        fs.writeFileSync(path.join(dir, file), content);
      }
    } catch (error) {
      throw new LocalError(`Failed to write the project in ${dir}`, { cause: error });
    }
    ctx.out.success(`Created worker project in ${given ?? "."}`);

    if (ctx.opts.git !== false && !fs.existsSync(path.join(dir, ".git"))) {
      const code = await run("git", ["init", "--quiet"], dir, ctx.env, () => {});
      if (code === 0) ctx.out.success("Initialized a git repository");
      else if (ctx.opts.git === true) ctx.out.warn("git init failed; skipped.");
    }

    if (ctx.opts.install !== false) {
      ctx.out.status("Installing dependencies (npm install)...");
      let output = "";
      const code = await run("npm", ["install", "--no-audit", "--no-fund"], dir, ctx.env, (text) => (output += text));
      if (code !== 0) {
        ctx.out.status(output.trim());
        throw new UserError("npm install failed.", { hint: `Fix the error above, then run \`npm install\` in ${given ?? "."}.` });
      }
      ctx.out.success("Installed dependencies");
    }

    ctx.out.status("\nNext steps:");
    if (given) ctx.out.status(`  cd ${given}`);
    if (ctx.opts.install === false) ctx.out.status("  npm install");
    ctx.out.status(`  ntn workers deploy --name ${name}`);
    ctx.out.status(`  ntn workers exec sayHello -d '{"name":"World"}'`);
  },
});
