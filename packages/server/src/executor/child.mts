/**
 * The entry of a worker's sandboxed process. It loads the deployment's bundle (the worker's
 * `export default new Worker()`), reports the manifest, then runs capabilities, several at once when
 * the server sends them so, with the SDK's own `worker.run(key, input, { concreteOutput: true })`.
 *
 * Started with Node's permission model: it may read only this file, the bundle and the installed
 * tree, and write only its scratch directory. So what it imports of ours is bundled into it
 * (scripts/bundle-server.mjs): the egress client, and types; undici is mounted beside it.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import fs from "node:fs";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import { routeThroughGateway } from "../egress/client.js";
import { encodeMessage, LineDecoder, MESSAGE_FD, type EnvPatch, type FromChild, type SerializedError, type ToChild } from "./protocol.js";

const [bundlePath = "", logLimitArg = "1048576", resultLimitArg = "4194304", egressSocket = "", undiciDir = ""] = process.argv.slice(2);
// Before the worker's code loads: fetch, node:http and node:https go out through the gateway.
if (egressSocket) routeThroughGateway(egressSocket, undiciDir);
const LOG_LIMIT = Number(logLimitArg);
const RESULT_LIMIT = Number(resultLimitArg);

/** To the server, on descriptor 3: synchronous, so nothing is lost when the process ends next. */
function send(message: FromChild): void {
  outbox.push(encodeMessage(message));
  flush();
}

/**
 * A run's answer: the answers of one turn of the event loop go in one write at its end (a process
 * running several runs answers them together, and the server is woken once). Output is written as
 * it comes (a run that then spins forever still shows what it printed), after the answers before it.
 */
function sendAnswer(message: FromChild): void {
  sendLine(encodeMessage(message));
}
function sendLine(line: string): void {
  outbox.push(line);
  if (!flushScheduled) {
    flushScheduled = true;
    // Once the promise jobs of this turn have run: the answers of runs that ended together, and
    // before any other callback (one that spins, or ends the process) could hold them back.
    process.nextTick(flush);
  }
}

let outbox: string[] = [];
let flushScheduled = false;
function flush(): void {
  flushScheduled = false;
  if (outbox.length === 0) return;
  const bytes = Buffer.from(outbox.length === 1 ? outbox[0]! : outbox.join(""));
  outbox = [];
  try {
    for (let written = 0; written < bytes.length; ) written += fs.writeSync(MESSAGE_FD, bytes, written);
  } catch {
    // The server is gone: the process ends with its input.
    process.exit(0);
  }
}
// Whatever ends the process (the worker's own process.exit), the answers of its last turn go first.
process.on("exit", () => {
  try {
    flush();
  } catch {
    // exiting anyway
  }
});

// From the server, on stdin. A message that is not ours means the channel is not the server's.
const handlers: ((message: ToChild) => void)[] = [];
const decoder = new LineDecoder<ToChild>(
  64 * 1024 * 1024,
  (message) => {
    for (const handler of handlers) handler(message);
  },
  () => process.exit(1),
);
process.stdin.on("data", (chunk: Buffer) => decoder.push(chunk));
// The server went away (or closed the channel): nothing more will come.
process.stdin.on("end", () => process.exit(0));
function onServerMessage(handler: (message: ToChild) => void): void {
  handlers.push(handler);
}

function serialize(error: unknown): SerializedError {
  if (error instanceof Error) {
    const { code, permission, resource } = error as Error & { code?: unknown; permission?: unknown; resource?: unknown };
    return {
      name: error.name,
      message: error.message,
      stack: error.stack,
      ...(typeof code === "string" ? { code } : {}),
      ...(typeof permission === "string" ? { permission } : {}),
      ...(typeof resource === "string" ? { resource } : {}),
    };
  }
  return { name: "Error", message: typeof error === "string" ? error : JSON.stringify(error) ?? String(error) };
}

// Everything the worker prints reaches the server over IPC, in order with its result, tagged with
// the run it belongs to and capped per run. A process may run several capabilities at once: the
// run a piece of output belongs to is the one whose async context printed it (a timer or promise
// started by a run keeps its run), kept in an AsyncLocalStorage.
interface RunState {
  runId: string | null;
  loggedBytes: number;
  truncatedNoticeSent: boolean;
  /** What the worker's execute threw, before the SDK wrapped it (its stack is the worker's). */
  originalError: unknown;
}
const runContext = new AsyncLocalStorage<RunState>();
/** Output outside any run: while loading, and from the module's own timers. */
const outsideRuns: RunState = { runId: null, loggedBytes: 0, truncatedNoticeSent: false, originalError: undefined };
for (const stream of ["stdout", "stderr"] as const) {
  const target = process[stream];
  target.write = ((chunk: string | Uint8Array, encoding?: unknown, callback?: unknown) => {
    const run = runContext.getStore() ?? outsideRuns;
    const data = typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8");
    if (run.loggedBytes < LOG_LIMIT) {
      const room = LOG_LIMIT - run.loggedBytes;
      const piece = data.length > room ? data.slice(0, room) : data;
      run.loggedBytes += piece.length;
      send({ type: "log", runId: run.runId, stream, data: piece });
    } else if (!run.truncatedNoticeSent) {
      run.truncatedNoticeSent = true;
      send({ type: "log", runId: run.runId, stream: "stderr", data: `[workyard] output beyond ${LOG_LIMIT} bytes was dropped\n` });
    }
    const cb = typeof encoding === "function" ? encoding : callback;
    if (typeof cb === "function") queueMicrotask(() => (cb as () => void)());
    return true;
  }) as typeof target.write;
}

// While runs are under way, a sign of life four times a second: a process that falls silent is one
// whose event loop is held (a run that spins), and the server gives it no more runs.
let runsUnderWay = 0;
setInterval(() => {
  if (runsUnderWay > 0) sendLine('{"type":"alive"}\n');
}, 250).unref();

function applyEnv(patch: EnvPatch): void {
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete process.env[key];
    else process.env[key] = value;
  }
}

// With concreteOutput the SDK rethrows a tool's error as a new ToolExecutionError carrying only the
// message; wrapping `execute` keeps the original (in the run's state), whose stack (source-mapped)
// points at the worker's own lines.
async function instrumentSdk(): Promise<void> {
  try {
    const sdkPath = createRequire(bundlePath).resolve("@notionhq/workers");
    const sdk = (await import(pathToFileURL(sdkPath).href)) as { Worker?: { prototype: Record<string, unknown> } };
    const proto = sdk.Worker?.prototype;
    const tool = proto?.tool;
    if (!proto || typeof tool !== "function") return;
    proto.tool = function (this: unknown, key: string, config: { execute?: (...args: unknown[]) => unknown }) {
      const execute = config?.execute;
      if (typeof execute !== "function") return tool.call(this, key, config);
      return tool.call(this, key, {
        ...config,
        execute: async (...args: unknown[]) => {
          try {
            return await execute(...args);
          } catch (error) {
            const run = runContext.getStore();
            if (run) run.originalError = error;
            throw error;
          }
        },
      });
    };
  } catch {
    // A bundle without the SDK: nothing to instrument; loading it reports the problem.
  }
}

interface WorkerLike {
  run(key: string, input: unknown, options: { concreteOutput: true }): Promise<unknown>;
  manifest: unknown;
}

async function main(): Promise<void> {
  const started = performance.now();
  let worker: WorkerLike;
  try {
    await instrumentSdk();
    // Source maps from here on: the worker's own bundle gets its stacks mapped to src/index.ts,
    // while the SDK's modules, loaded above, are not made to read and parse their 138 maps
    // (--enable-source-maps would, at every process start).
    process.setSourceMapsEnabled(true);
    const mod = (await import(pathToFileURL(bundlePath).href)) as { default?: WorkerLike };
    const candidate = mod.default;
    if (!candidate || typeof candidate.run !== "function" || typeof candidate !== "object") {
      throw Object.assign(
        new Error("src/index.ts must `export default` a Worker: `const worker = new Worker(); export default worker;`"),
        { name: "NoWorkerExported" },
      );
    }
    worker = candidate;
    send({ type: "ready", manifest: JSON.parse(JSON.stringify(worker.manifest)), loadMs: performance.now() - started });
  } catch (error) {
    send({ type: "load_failed", error: serialize(error) });
    process.exit(1);
  }

  onServerMessage((message) => {
    if (message.type === "env") {
      applyEnv(message.env);
      return;
    }
    if (message.type === "ping") {
      sendLine(`{"type":"alive","seq":${Number(message.seq)}}\n`);
      return;
    }
    if (message.type !== "run") return;
    applyEnv(message.env);
    const run: RunState = { runId: message.runId, loggedBytes: 0, truncatedNoticeSent: false, originalError: undefined };
    const runId = message.runId;
    runsUnderWay += 1;
    runContext.run(run, () => worker.run(message.key, message.input, { concreteOutput: true })).finally(() => (runsUnderWay -= 1)).then(
      (value) => {
        const json = JSON.stringify(value ?? null);
        if (json.length > RESULT_LIMIT) {
          sendAnswer({ type: "error", runId, error: { name: "ResultTooLarge", message: `The result is larger than ${RESULT_LIMIT} bytes.` } });
        } else {
          // The result as the worker returned it, in JSON once (not parsed and written again).
          sendLine(`{"type":"result","runId":${JSON.stringify(runId)},"value":${json}}\n`);
        }
      },
      (error: unknown) => {
        const thrown = serialize(error);
        // The SDK's wrapper keeps the message; the original keeps the worker's own stack.
        if (run.originalError !== undefined && thrown.name === "ToolExecutionError") {
          const { stack, code, permission, resource } = serialize(run.originalError);
          Object.assign(thrown, { stack, code, permission, resource });
        }
        sendAnswer({ type: "error", runId, error: thrown });
      },
    );
  });
}

const crash = (error: unknown) => {
  // The run whose code threw, when its context is known; else every run of the process fails with it.
  send({ type: "crash", runId: runContext.getStore()?.runId ?? null, error: serialize(error) });
  process.exit(1);
};
process.on("uncaughtException", crash);
process.on("unhandledRejection", crash);

// The worker's variables come first, before its code loads (module-level code reads them once).
let started = false;
onServerMessage((message) => {
  if (started || message.type !== "start") return;
  started = true;
  for (const [key, value] of Object.entries(message.env)) process.env[key] = value;
  void main();
});
