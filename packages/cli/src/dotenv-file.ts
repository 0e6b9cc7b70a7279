/**
 * The .env dialect of the official ntn, which `env pull` writes and `env push` and `exec --local`
 * read. We keep to it (rather than the dotenv package's rules) so a file written by either CLI
 * reads back to the same values: dotenv leaves `\"`, `\\` and `\t` escaped inside double quotes
 * and cuts values at ` #`, so a pull followed by a push would change secrets.
 *
 * Reading, per line: trimmed; blank lines, `#` comments and lines without `=` are not entries;
 * the key is the text before the first `=`, trimmed, with an `export ` prefix allowed; the value is
 * the rest, trimmed; `"..."` is unquoted with backslash escapes (\n \r \t, any other char as
 * itself), `'...'` is unquoted literally, anything else is taken as it is (no inline comments).
 */

export interface EnvLine {
  /** The line as it was. */
  raw: string;
  /** Present when the line defines a variable. */
  key?: string;
  value?: string;
  exported?: boolean;
}

export function parseValue(text: string): string {
  if (text.length >= 2 && text.startsWith('"') && text.endsWith('"')) {
    const inner = text.slice(1, -1);
    let out = "";
    for (let i = 0; i < inner.length; i++) {
      const c = inner[i]!;
      if (c !== "\\" || i === inner.length - 1) {
        out += c;
        continue;
      }
      const next = inner[++i]!;
      out += next === "n" ? "\n" : next === "r" ? "\r" : next === "t" ? "\t" : next;
    }
    return out;
  }
  if (text.length >= 2 && text.startsWith("'") && text.endsWith("'")) return text.slice(1, -1);
  return text;
}

export function parseLine(raw: string): EnvLine {
  const line = raw.trim();
  if (!line || line.startsWith("#")) return { raw };
  const eq = line.indexOf("=");
  if (eq < 0) return { raw };
  let key = line.slice(0, eq).trim();
  let exported = false;
  if (/^export\s+/.test(key)) {
    key = key.replace(/^export\s+/, "");
    exported = true;
  }
  if (!key) return { raw };
  return { raw, key, value: parseValue(line.slice(eq + 1).trim()), exported };
}

export function parseEnvFile(text: string): EnvLine[] {
  const lines = text.split(/\r?\n/);
  if (lines.length > 0 && lines.at(-1) === "") lines.pop();
  return lines.map(parseLine);
}

/** Variables of a file; a key defined twice takes its last value. */
export function envEntries(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of parseEnvFile(text)) if (line.key !== undefined) out.set(line.key, line.value!);
  return out;
}

/**
 * A value as the official CLI writes it: in double quotes when it is empty, starts with white space
 * or `'`, ends with white space, or holds `#`, `"`, a newline or a carriage return; inside quotes
 * `\`, `"`, newline, carriage return and tab are escaped. (The official CLI quotes only a leading
 * space or tab and a trailing space; other white space at the ends would not survive a re-read.)
 */
export function renderValue(value: string): string {
  // Reading trims white space at both ends, so any (not just a space) must be quoted to survive.
  const needsQuotes = value === "" || /^[\s']/.test(value) || /\s$/.test(value) || /[#"\n\r]/.test(value);
  if (!needsQuotes) return value;
  const escaped = value.replace(/[\\"\n\r\t]/g, (c) => ({ "\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t" })[c]!);
  return `"${escaped}"`;
}

export function renderLine(key: string, value: string, exported = false): string {
  return `${exported ? "export " : ""}${key}=${renderValue(value)}`;
}

export interface MergePlan {
  added: string[];
  changed: string[];
  removed: string[];
  /** The file's new text. */
  content: string;
}

/**
 * `env pull` into an existing file: lines of remote keys are rewritten in place (all of them, when a
 * key repeats), everything else (comments, blank lines, other keys) is kept, and new keys are
 * appended in sorted order. `comments` puts a `# ...` line above a key (token expiry), replacing
 * the one a previous pull wrote there.
 */
export function mergeEnv(
  existing: string,
  remote: Map<string, string>,
  comments: Map<string, string> = new Map(),
  /** Keys to take out of the file (a token the server could not renew must not linger). */
  remove: Set<string> = new Set(),
): MergePlan {
  const lines = parseEnvFile(existing).filter((line, i, all) => {
    if (line.key !== undefined) return !remove.has(line.key);
    // A managed expiry comment goes with its removed key.
    const next = all[i + 1];
    return !(next?.key !== undefined && remove.has(next.key) && isManagedComment(line.raw, next.key));
  });
  const local = new Map<string, string>();
  for (const line of lines) if (line.key !== undefined) local.set(line.key, line.value!);
  const added = [...remote.keys()].filter((k) => !local.has(k)).sort();
  const changed = [...remote.keys()].filter((k) => local.has(k) && local.get(k) !== remote.get(k)).sort();

  const out: string[] = [];
  for (const line of lines) {
    if (line.key !== undefined && remote.has(line.key)) {
      const comment = comments.get(line.key);
      if (comment !== undefined) {
        if (out.length > 0 && isManagedComment(out.at(-1)!, line.key)) out.pop();
        out.push(comment);
      }
      out.push(renderLine(line.key, remote.get(line.key)!, line.exported));
    } else {
      out.push(line.raw);
    }
  }
  for (const key of added) {
    const comment = comments.get(key);
    if (comment !== undefined) out.push(comment);
    out.push(renderLine(key, remote.get(key)!));
  }
  const removed = [...remove].filter((k) => parseEnvFile(existing).some((line) => line.key === k)).sort();
  return { added, changed, removed, content: out.length > 0 ? `${out.join("\n")}\n` : "" };
}

/** The comment our pull writes above a token: `# KEY expires <time>`. */
export function expiryComment(key: string, expiresAt: string): string {
  return `# ${key} expires ${expiresAt}`;
}

function isManagedComment(line: string, key: string): boolean {
  return line.startsWith(`# ${key} expires `);
}

/** Reads `# KEY expires <ISO time>` comments back, for `exec --local`'s staleness check. */
export function expiryComments(text: string): Map<string, Date> {
  const out = new Map<string, Date>();
  for (const line of text.split(/\r?\n/)) {
    const match = /^# (\S+) expires (\S+)$/.exec(line.trim());
    if (match) {
      const at = new Date(match[2]!);
      if (!Number.isNaN(at.getTime())) out.set(match[1]!, at);
    }
  }
  return out;
}
