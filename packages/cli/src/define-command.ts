import readline from "node:readline";
import { ApiClient } from "./api-client.js";
import {
  readWorkersJson,
  resolveConnection,
  workersJsonPath,
  type Connection,
  type WorkersJson,
} from "./config.js";
import { LocalError, UserError } from "./errors.js";
import { formatOf, type Format, type Output } from "./output.js";

export interface ArgSpec {
  /** As shown in usage, e.g. WORKER_ID. */
  name: string;
  description: string;
  required?: boolean;
  variadic?: boolean;
}

export interface OptionSpec {
  /** Commander flags, e.g. `-d, --data <DATA>` or `--no-file`. */
  flags: string;
  description: string;
  default?: unknown;
  hidden?: boolean;
  /** May be given several times: the values arrive as a list. */
  repeatable?: boolean;
}

/** Everything a command needs, created once per invocation by main.ts. */
export interface CommandContext {
  /** Positional arguments by name (variadic ones as arrays). */
  args: Record<string, string | string[] | undefined>;
  opts: Record<string, unknown>;
  out: Output;
  env: NodeJS.ProcessEnv;
  cwd: string;
  stdin: NodeJS.ReadableStream & { isTTY?: boolean };
  globals: { verbose: boolean; workersConfigFile: string | undefined };
  /** --json / --plain / the default table. */
  format(): Format;
  workersJsonFile(): string;
  workersJson(): WorkersJson | undefined;
  connection(): Connection;
  api(): ApiClient;
  /** The worker to act on: the argument or --worker-id, else workers.json. */
  workerId(explicit?: string | undefined): string;
  interactive(): boolean;
  /** Asks a yes/no question on a terminal; without one, fails with exit 1 and the --yes hint. */
  confirm(question: string): Promise<boolean>;
}

export interface CommandSpec {
  summary: string;
  description?: string;
  aliases?: string[];
  args?: ArgSpec[];
  options?: OptionSpec[];
  /** Adds --json and --plain. */
  formats?: boolean;
  /** Adds --worker-id <WORKER_ID>. */
  workerIdOption?: boolean;
  run(ctx: CommandContext): Promise<void>;
}

export function defineCommand(spec: CommandSpec): CommandSpec {
  return spec;
}

export function createContext(init: {
  args: CommandContext["args"];
  opts: Record<string, unknown>;
  out: Output;
  env: NodeJS.ProcessEnv;
  cwd: string;
  stdin: CommandContext["stdin"];
  globals: CommandContext["globals"];
}): CommandContext {
  let workersJsonCache: { value: WorkersJson | undefined } | undefined;
  let connectionCache: Connection | undefined;
  const ctx: CommandContext = {
    ...init,
    format: () => formatOf(init.opts as { json?: boolean; plain?: boolean }),
    workersJsonFile: () => workersJsonPath(init.globals.workersConfigFile, init.env, init.cwd),
    workersJson() {
      workersJsonCache ??= { value: readWorkersJson(ctx.workersJsonFile()) };
      return workersJsonCache.value;
    },
    connection() {
      connectionCache ??= resolveConnection(init.env, ctx.workersJson());
      return connectionCache;
    },
    api() {
      const { baseUrl, token } = ctx.connection();
      return new ApiClient(baseUrl, token);
    },
    workerId(explicit) {
      const id = explicit ?? (init.opts.workerId as string | undefined) ?? ctx.workersJson()?.workerId;
      if (!id) {
        throw new UserError("No worker ID found. Provide a worker ID or run from a directory with workers.json.", {
          hint: "Run `ntn workers deploy` first, or pass a worker ID explicitly.",
        });
      }
      return id;
    },
    interactive: () => Boolean(init.stdin.isTTY && (init.out.stderr as { isTTY?: boolean }).isTTY),
    async confirm(question) {
      if (!ctx.interactive()) {
        throw new LocalError("Cannot confirm in a non-interactive environment.", { hint: "Use --yes to skip the confirmation prompt." });
      }
      const rl = readline.createInterface({ input: init.stdin, output: init.out.stderr as NodeJS.WritableStream });
      try {
        const answer = await new Promise<string>((resolve) => rl.question(`${question} (y/n) › `, resolve));
        return /^y(es)?$/i.test(answer.trim());
      } finally {
        rl.close();
      }
    },
  };
  return ctx;
}
