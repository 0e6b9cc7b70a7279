import { ApiError, isUserError } from "./errors.js";

export type Format = "table" | "json" | "plain";

/** Terminal escape sequences: CSI (7- and 8-bit), OSC/DCS/SOS/PM/APC strings, other ESC sequences. */
const ESCAPE_SEQUENCE =
  /(?:\u001b\[|\u009b)[0-?]*[ -/]*[@-~]?|(?:\u001b[\]PX^_]|[\u0090\u0098\u009d\u009e\u009f])[^\u0007\u001b\u009c]*(?:\u0007|\u001b\\|\u009c)?|\u001b[ -/]*[0-~]?/g;
/** C0 controls but tab and newline, DEL, and C1 controls. */
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;

/**
 * Text safe to print on a terminal: no escape sequence or control character (tabs and newlines
 * stay). Every line on stderr goes through it, as most carry text the server sent (its messages,
 * a provider's error description, build and worker logs): none may clear the screen or set the
 * title. Data on stdout is left as it is.
 */
export function terminalSafe(text: string): string {
  return text.replace(ESCAPE_SEQUENCE, "").replace(CONTROL, "");
}

/** A writable the output goes to: process.stdout / process.stderr, or a buffer in tests. */
export interface Sink {
  write(text: string): unknown;
  isTTY?: boolean;
}

/**
 * The only writer to stdout and stderr. Data (tables, JSON, results, URLs, tokens) goes to stdout;
 * status lines, progress and errors go to stderr, so `ntn ... > file` captures data alone.
 */
export class Output {
  constructor(
    readonly stdout: Sink,
    readonly stderr: Sink,
    readonly options: { verbose: boolean; jsonErrors?: boolean } = { verbose: false },
  ) {}

  /** A line of data on stdout. */
  data(text: string): void {
    this.stdout.write(text.endsWith("\n") ? text : `${text}\n`);
  }

  /** Raw text on stdout, as it is. */
  raw(text: string): void {
    this.stdout.write(text);
  }

  json(value: unknown): void {
    this.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  }

  /** A status line on stderr, terminal-safe (terminalSafe). */
  status(text: string): void {
    const safe = terminalSafe(text);
    this.stderr.write(safe.endsWith("\n") && safe !== "\n" ? safe : `${safe}\n`);
  }

  success(text: string): void {
    this.status(`✔ ${text}`);
  }

  warn(text: string, hint?: string): void {
    this.status(`warning: ${text}`);
    if (hint) this.status(`  hint: ${hint}`);
  }

  /**
   * Rows as the official CLI prints them: a header of upper-case names, columns left-aligned and
   * two spaces apart (the last not padded); `plain` is tab-separated without a header; `json`
   * prints `jsonValue` (the API objects) instead.
   */
  table(format: Format, headers: string[], rows: string[][], jsonValue: unknown, emptyMessage?: string): void {
    if (format === "json") return this.json(jsonValue);
    if (format === "plain") {
      for (const row of rows) this.data(row.join("\t"));
      return;
    }
    if (rows.length === 0 && emptyMessage) return this.status(emptyMessage);
    const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
    const line = (cells: string[]) =>
      cells.map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i]! + 2))).join("");
    this.data(line(headers));
    for (const row of rows) this.data(line(row));
  }

  /** Label-value lines, as `workers get` prints a worker: labels padded to one column. */
  fields(pairs: [string, string][]): void {
    const width = Math.max(...pairs.map(([label]) => label.length)) + 3;
    for (const [label, value] of pairs) this.data(`${label.padEnd(width)}${value}`);
  }

  /** An error as `error: <message>` and `  hint: <hint>`; a bug gets its stack only with --verbose. */
  error(error: unknown): void {
    const err = error instanceof Error ? error : new Error(String(error));
    const hint = isUserError(err) ? err.hint : undefined;
    if (this.options.jsonErrors) {
      const body: Record<string, unknown> = { error: terminalSafe(err.message) };
      if (hint) body.hint = terminalSafe(hint);
      if (err instanceof ApiError) Object.assign(body, { code: err.code, status: err.status });
      this.stderr.write(`${JSON.stringify(body)}\n`);
      return;
    }
    this.status(`error: ${err.message}`);
    if (this.options.verbose) {
      if (err instanceof ApiError) this.status(`  caused by: HTTP ${err.status} ${err.code}${requestId(err)}`);
      let cause = (err as { cause?: unknown }).cause;
      while (cause instanceof Error) {
        this.status(`  caused by: ${cause.message}`);
        cause = (cause as { cause?: unknown }).cause;
      }
      if (!isUserError(err) && err.stack) this.status(err.stack.split("\n").slice(1).join("\n"));
    }
    if (hint) this.status(`  hint: ${hint}`);
    if (!isUserError(err) && !this.options.verbose) this.status("  hint: this looks like a bug in ntn; run again with --verbose for details");
  }
}

function requestId(err: ApiError): string {
  const id = err.body?.request_id;
  return typeof id === "string" ? ` (request ${id})` : "";
}

export function formatOf(options: { json?: boolean; plain?: boolean }): Format {
  return options.json ? "json" : options.plain ? "plain" : "table";
}
