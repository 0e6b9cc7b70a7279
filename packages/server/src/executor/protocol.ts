/**
 * Messages between the server and a worker's process (child.mts), one JSON object per line: to
 * the child on its stdin, from the child on its descriptor 3. Not Node's IPC channel: a worker can
 * write anything to its own descriptors, and Node's channel parses what arrives inside the server
 * and throws out of it (one line of garbage ended the server). Here the server reads through a
 * LineDecoder with a bounded line and a parse that cannot throw, and a child that sends something
 * else is stopped. Both sides import this module; the child's copy is bundled into its entry.
 */

/** The child's descriptor for messages to the server (0, 1 and 2 are stdin, stdout and stderr). */
export const MESSAGE_FD = 3;

/** One message as it travels. */
export function encodeMessage(message: ToChild | FromChild): string {
  return `${JSON.stringify(message)}\n`;
}

/**
 * Splits a byte stream into messages: a line longer than `maxLine`, or one that is not a JSON
 * object with a string `type`, is a protocol violation (`onViolation`, once; then nothing more).
 */
export class LineDecoder<T extends { type: string }> {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private broken = false;

  constructor(
    private readonly maxLine: number,
    private readonly onMessage: (message: T) => void,
    private readonly onViolation: (reason: string) => void,
  ) {}

  push(chunk: Buffer): void {
    let start = 0;
    while (!this.broken) {
      const newline = chunk.indexOf(10, start);
      if (newline < 0) {
        const rest = chunk.subarray(start);
        this.pendingBytes += rest.length;
        if (this.pendingBytes > this.maxLine) return this.violate(`a message longer than ${this.maxLine} bytes`);
        if (rest.length > 0) this.pending.push(rest);
        return;
      }
      const piece = chunk.subarray(start, newline);
      if (this.pendingBytes + piece.length > this.maxLine) return this.violate(`a message longer than ${this.maxLine} bytes`);
      const line = this.pending.length > 0 ? Buffer.concat([...this.pending, piece]) : piece;
      this.pending = [];
      this.pendingBytes = 0;
      start = newline + 1;
      if (line.length === 0) continue;
      let message: unknown;
      try {
        message = JSON.parse(line.toString("utf8"));
      } catch {
        return this.violate("a line that is not JSON");
      }
      if (!message || typeof message !== "object" || typeof (message as { type?: unknown }).type !== "string") {
        return this.violate("a message without a type");
      }
      this.onMessage(message as T);
    }
  }

  private violate(reason: string): void {
    if (this.broken) return;
    this.broken = true;
    this.pending = [];
    this.onViolation(reason);
  }
}

export interface SerializedError {
  name: string;
  message: string;
  stack?: string | undefined;
  /** Node's error code, e.g. ERR_ACCESS_DENIED when the permission model refused something. */
  code?: string | undefined;
  /** For ERR_ACCESS_DENIED: what was refused (FileSystemRead, ChildProcess, ...) and on what. */
  permission?: string | undefined;
  resource?: string | undefined;
}

/** Process environment changes: a string sets the variable, null removes it. */
export type EnvPatch = Record<string, string | null>;

export type ToChild =
  /**
   * The first message: the worker's variables, set before its code loads, so they never pass
   * through the environment of the processes that start it (bubblewrap, setpriv).
   */
  | { type: "start"; env: Record<string, string> }
  | { type: "run"; runId: string; key: string; input: unknown; env: EnvPatch }
  /** A token refreshed while a run goes on: applied at once, so accessToken() sees it next call. */
  | { type: "env"; env: EnvPatch }
  /** Answered with `alive` and the same `seq` once the event loop turns: whether it is free now. */
  | { type: "ping"; seq: number };

export type FromChild =
  | { type: "ready"; manifest: unknown; loadMs: number }
  | { type: "load_failed"; error: SerializedError }
  | { type: "log"; runId: string | null; stream: "stdout" | "stderr"; data: string }
  | { type: "result"; runId: string; value: unknown }
  | { type: "error"; runId: string; error: SerializedError }
  /** Sent while runs are under way: the process's event loop turns (a silent one may be stuck). With `seq`: the answer to a ping. */
  | { type: "alive"; seq?: number }
  /** An exception outside the run's promise (a timer, an unhandled rejection): the process ends. */
  | { type: "crash"; runId: string | null; error: SerializedError };

/** A key the worker's manifest does not have: the words every path that looks one up uses. */
export function capabilityNotFound(key: string): { code: "capability_not_found"; message: string; hint: string } {
  return { code: "capability_not_found", message: `The worker has no capability ${JSON.stringify(key)}.`, hint: "Run `ntn workers capabilities list` to see its capabilities." };
}

/**
 * Why a capability cannot be run, in the words the server's exec and the CLI's `exec --local`
 * both use (the code is the server's error code); undefined when it runs.
 */
export function whyNotRunnable(
  capabilities: readonly { _tag: string; key: string }[],
  key: string,
): { code: "capability_not_found" | "capability_not_runnable" | "capability_not_supported"; message: string; hint: string } | undefined {
  const capability = capabilities.find((c) => c.key === key);
  if (!capability) return capabilityNotFound(key);
  if (capability._tag === "oauth") {
    return {
      code: "capability_not_runnable",
      message: `${JSON.stringify(key)} is an OAuth capability: it only provides configuration.`,
      hint: `Connect it with \`ntn workers oauth start ${key}\`; tools call its accessToken().`,
    };
  }
  if (capability._tag !== "tool" && capability._tag !== "webhook") {
    return {
      code: "capability_not_supported",
      message: `Running ${capability._tag} capabilities is not supported by this server yet.`,
      hint: "Tools and webhooks run with `ntn workers exec`; this capability deploys and lists, but does not run here.",
    };
  }
  return undefined;
}

/** A run's failure in one readable line: the SDK reports invalid input as ajv's error list in JSON. */
export function describeRunError(error: SerializedError): string {
  if (error.code === "ERR_ACCESS_DENIED") {
    const what = error.permission ? `: ${error.permission}${error.resource ? ` ${error.resource}` : ""}` : "";
    return `${error.message} (ERR_ACCESS_DENIED${what}). The sandbox allows reading only the worker's own files and writing only its scratch directory, and no child processes, threads or addons.`;
  }
  if (error.name === "InvalidToolInputError" || error.name === "InvalidToolOutputError") {
    try {
      const issues = JSON.parse(error.message) as { instancePath?: string; message?: string; params?: Record<string, unknown> }[];
      const what = error.name === "InvalidToolInputError" ? "Invalid input" : "Invalid output";
      const parts = issues.map((i) => {
        const extra = i.params?.additionalProperty ? ` (${String(i.params.additionalProperty)})` : "";
        return `${i.instancePath || "(root)"} ${i.message ?? "is invalid"}${extra}`;
      });
      return `${what}: ${parts.join("; ")}`;
    } catch {
      return error.message;
    }
  }
  return error.message;
}

/**
 * A worker's stack as the worker's author wants it: the sandbox entry's own frames dropped, and
 * paths to installed packages shortened to `node_modules/...`.
 */
export function tidyStack(stack: string): string {
  return stack
    .split("\n")
    .filter((line) => !/\/runtime\/child\.mjs:|executor\/child\.m[jt]s:|\/workyard\/child\.mjs:|sandbox\/worker\.mjs:/.test(line))
    .map((line) => line.replace(/(file:\/\/)?\/\S*?\/(deps\/[0-9a-f]+\/)?node_modules\//g, "node_modules/"))
    .join("\n");
}
