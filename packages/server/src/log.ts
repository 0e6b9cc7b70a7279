import { pino, type Logger } from "pino";

export type { Logger };

/** Field names that may carry a credential; their values never reach a log line. */
const SENSITIVE_KEY = /token|secret|password|passwd|authorization|cookie|^code$|verifier|^value$|signature|api_?key|master_?key|private_?key/i;
const REDACTED = "[redacted]";

/** A deep copy with every credential-like field replaced; cycles and depth are bounded. */
export function redact(value: unknown, depth = 0): unknown {
  if (depth > 6 || value === null || typeof value !== "object") return value;
  if (value instanceof Error) return value;
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    out[k] = SENSITIVE_KEY.test(k) && v !== undefined && v !== null && typeof v !== "object" ? REDACTED : redact(v, depth + 1);
  }
  return out;
}

/** The one logger: JSON lines on stderr (or the given stream), credentials redacted. */
export function createLogger(options: { level: string; stream: NodeJS.WritableStream }): Logger {
  return pino(
    {
      level: options.level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: {
        log: (object) => redact(object) as Record<string, unknown>,
      },
    },
    options.stream,
  );
}
