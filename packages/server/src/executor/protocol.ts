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

/** Arguments of child.ts, in order. */
export interface ChildArgs {
  bundlePath: string;
  /** Bytes of stdout+stderr forwarded per run before the rest is dropped. */
  logLimit: number;
  /** Bytes of a result's JSON. */
  resultLimit: number;
}
