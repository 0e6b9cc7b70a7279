/**
 * Messages between the server and a worker's sandboxed process (child.ts), over Node's IPC
 * channel. Both sides import these types; child.ts imports nothing else of ours, since the
 * permission model lets it read only its own file, its bundle and the installed tree.
 */

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
  | { type: "run"; runId: string; key: string; input: unknown; env: EnvPatch }
  /** A token refreshed while a run goes on: applied at once, so accessToken() sees it next call. */
  | { type: "env"; env: EnvPatch };

export type FromChild =
  | { type: "ready"; manifest: unknown; loadMs: number }
  | { type: "load_failed"; error: SerializedError }
  | { type: "log"; runId: string | null; stream: "stdout" | "stderr"; data: string }
  | { type: "result"; runId: string; value: unknown }
  | { type: "error"; runId: string; error: SerializedError }
  /** An exception outside the run's promise (a timer, an unhandled rejection): the process ends. */
  | { type: "crash"; runId: string | null; error: SerializedError };

/**
 * Why a capability cannot be run, in the words the server's exec and the CLI's `exec --local`
 * both use (the code is the server's error code); undefined when it runs.
 */
export function whyNotRunnable(
  capabilities: readonly { _tag: string; key: string }[],
  key: string,
): { code: "capability_not_found" | "capability_not_runnable" | "capability_not_supported"; message: string; hint: string } | undefined {
  const capability = capabilities.find((c) => c.key === key);
  if (!capability) {
    return { code: "capability_not_found", message: `The worker has no capability ${JSON.stringify(key)}.`, hint: "Run `ntn workers capabilities list` to see its capabilities." };
  }
  if (capability._tag === "oauth") {
    return {
      code: "capability_not_runnable",
      message: `${JSON.stringify(key)} is an OAuth capability: it only provides configuration.`,
      hint: `Connect it with \`ntn workers oauth start ${key}\`; tools call its accessToken().`,
    };
  }
  if (capability._tag !== "tool") {
    return {
      code: "capability_not_supported",
      message: `Running ${capability._tag} capabilities is not supported by this server yet.`,
      hint: "Tools run with `ntn workers exec`; this capability deploys and lists, but does not run here.",
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
