import { Command, CommanderError, Option } from "commander";
import { CLI_VERSION } from "./api-client.js";
import { createContext, type CommandSpec } from "./define-command.js";
import { EXIT, isUserError, UsageError } from "./errors.js";
import { Output, type Sink } from "./output.js";
import { COMMANDS, GROUPS } from "./registry.js";

export interface RunOptions {
  argv: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  stdout?: Sink;
  stderr?: Sink;
  stdin?: NodeJS.ReadableStream & { isTTY?: boolean };
}

/** Builds the commander tree from the registry: groups first, then one leaf per command file. */
function buildProgram(onRun: (spec: CommandSpec, command: Command, positional: unknown[]) => Promise<void>, out: Output): Command {
  const program = new Command("ntn")
    .description("Workyard's ntn: run Notion workers on your own server")
    .version(`ntn ${CLI_VERSION} (workyard)`, "-V, --version", "Print version")
    .helpOption("-h, --help", "Print help")
    .option("-v, --verbose", "Show full error details including source chains")
    .option("--workers-config-file <WORKERS_CONFIG_FILE>", "Path to workers.json config file (overrides default CWD lookup)")
    .addOption(new Option("--env <ENV>", "Environment (accepted for compatibility; Workyard has one)").hideHelp())
    .showHelpAfterError("For more information, try '--help'.")
    .addHelpText(
      "after",
      `
Environment Variables:
  NOTION_API_BASE_URL         Base URL of the Workyard server (else the stored login's)
  NOTION_API_TOKEN            API token (overrides the stored login)
  NOTION_WORKSPACE_ID         Workspace ID (optional: the token names its workspace)
  NOTION_WORKERS_CONFIG_FILE  Path to workers.json config file (same as --workers-config-file)
  BROWSER                     Command that opens URLs (%s is replaced by the URL)
  DATABASE_URL                ntn server: PostgreSQL instead of SQLite
  WORKYARD_MASTER_KEY         ntn server: master keys, base64, comma separated, newest first`,
    )
    .configureOutput({
      writeOut: (text) => out.raw(text),
      writeErr: (text) => out.stderr.write(text),
      outputError: (text, write) => write(text),
    })
    .exitOverride();

  // Every path is a node; a node may be a group, a leaf, or both (`ntn server` runs and has subcommands).
  const nodes = new Map<string, Command>([["", program]]);
  const nodeFor = (path: string): Command => {
    const found = nodes.get(path);
    if (found) return found;
    const parts = path.split(" ");
    const parent = nodeFor(parts.slice(0, -1).join(" "));
    const command = parent.command(parts.at(-1)!).helpOption("-h, --help", "Print help").exitOverride();
    const group = GROUPS[path];
    if (group) {
      command.description(group.summary);
      if (group.aliases) command.aliases(group.aliases);
    }
    nodes.set(path, command);
    return command;
  };

  for (const [path, spec] of Object.entries(COMMANDS)) {
    const command = nodeFor(path).description(spec.description ?? spec.summary).summary(spec.summary);
    if (spec.aliases) command.aliases(spec.aliases);
    for (const arg of spec.args ?? []) {
      const shown = arg.required ? `<${arg.name}${arg.variadic ? "..." : ""}>` : `[${arg.name}${arg.variadic ? "..." : ""}]`;
      command.argument(shown, arg.description);
    }
    if (spec.workerIdOption) command.option("--worker-id <WORKER_ID>", "Worker ID (overrides workers.json)");
    for (const option of spec.options ?? []) {
      const o = new Option(option.flags, option.description);
      if (option.default !== undefined) o.default(option.default);
      if (option.hidden) o.hideHelp();
      if (option.repeatable) o.argParser((value: string, previous: string[] | undefined) => [...(previous ?? []), value]);
      command.addOption(o);
    }
    if (spec.formats) {
      command.addOption(new Option("--json", "Output as JSON").conflicts("plain"));
      command.addOption(new Option("--plain", "Output as tab-separated values without a header"));
    }
    command.action(async (...received: unknown[]) => {
      const self = received.at(-1) as Command;
      await onRun(spec, self, received.slice(0, spec.args?.length ?? 0));
    });
  }
  return program;
}

/** Runs one invocation and returns its exit code; the bin below is the only caller of process.exit. */
export async function run(options: RunOptions): Promise<number> {
  const env = options.env ?? process.env;
  const stdout = options.stdout ?? process.stdout;
  const stderr = options.stderr ?? process.stderr;
  const verbose = options.argv.includes("-v") || options.argv.includes("--verbose");
  // With --json, an error is JSON on stderr too (stdout carries data only), as STYLE promises.
  const jsonErrors = options.argv.includes("--json");
  const out = new Output(stdout, stderr, { verbose, jsonErrors });
  let exitCode: number = EXIT.ok;

  const program = buildProgram(async (spec, command, positional) => {
    const globals = command.optsWithGlobals() as { verbose?: boolean; workersConfigFile?: string };
    const args: Record<string, string | string[] | undefined> = {};
    (spec.args ?? []).forEach((arg, i) => {
      args[arg.name] = positional[i] as string | string[] | undefined;
    });
    const ctx = createContext({
      args,
      // With the parent's options: `ntn server rotate-key --data-dir D` parses --data-dir on `server`.
      opts: command.optsWithGlobals(),
      out,
      env,
      cwd: options.cwd ?? process.cwd(),
      stdin: options.stdin ?? process.stdin,
      globals: { verbose: Boolean(globals.verbose), workersConfigFile: globals.workersConfigFile ?? undefined },
    });
    await spec.run(ctx);
  }, out);

  try {
    await program.parseAsync(options.argv, { from: "user" });
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === "commander.helpDisplayed" || error.code === "commander.version") return EXIT.ok;
      // `ntn workers` without a subcommand: help was shown on stderr; a usage error, as clap has it.
      return EXIT.usage;
    }
    out.error(error);
    if (error instanceof UsageError) out.status("For more information, try '--help'.");
    exitCode = isUserError(error) ? error.exitCode : EXIT.failure;
  }
  return exitCode;
}
