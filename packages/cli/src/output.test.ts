/**
 * Security review, low finding: a provider's error_description reached the terminal raw. The server
 * cleans provider text; the CLI's stderr lines are the last line of defence for anything the server
 * sends. Data on stdout stays as it is.
 */
import { describe, expect, it } from "vitest";
import { ApiError, UserError } from "./errors.js";
import { Output, terminalSafe } from "./output.js";

const ESC = "\u001b";
const HOSTILE = `${ESC}[2J${ESC}[H${ESC}]0;pwned\u0007${ESC}]2;t${ESC}\\bad\u0007 ${ESC}[1mnews${ESC}[0m\r\u009b2J\u009d0;x\u009c\u0000!`;

function capture(options: { verbose: boolean; jsonErrors?: boolean } = { verbose: false }) {
  let stdout = "";
  let stderr = "";
  const out = new Output({ write: (t: string) => (stdout += t) }, { write: (t: string) => (stderr += t) }, options);
  return { out, stdout: () => stdout, stderr: () => stderr };
}

describe("terminalSafe", () => {
  it("drops escape sequences and control characters, keeps words, tabs and newlines", () => {
    expect(terminalSafe(HOSTILE)).toBe("bad news!");
    expect(terminalSafe("line one\n\tline two")).toBe("line one\n\tline two");
    expect(terminalSafe("déjà vu — 認可")).toBe("déjà vu — 認可");
  });
});

describe("Output on stderr", () => {
  it("an API error's message and hint, as the server sent them but plain", () => {
    const io = capture();
    io.out.error(new ApiError(`Access was denied at the provider (${HOSTILE}).`, 424, "oauth_provider_error", undefined, `Run it ${ESC}]0;x\u0007again`));
    expect(io.stderr()).toBe("error: Access was denied at the provider (bad news!).\n  hint: Run it again\n");
    expect(io.stdout()).toBe("");
  });

  it("status, success and warning lines", () => {
    const io = capture();
    io.out.status(`[worker] ${HOSTILE}`);
    io.out.success(`done${ESC}[2J`);
    io.out.warn(`careful${ESC}c`, `hint${ESC}[31m`);
    io.out.status("");
    expect(io.stderr()).toBe("[worker] bad news!\n✔ done\nwarning: careful\n  hint: hint\n\n");
  });

  it("errors as JSON (--json): message and hint plain", () => {
    const io = capture({ verbose: false, jsonErrors: true });
    io.out.error(new UserError(`nope ${ESC}[2J`, { hint: `try ${ESC}]0;t\u0007again` }));
    expect(JSON.parse(io.stderr())).toEqual({ error: "nope ", hint: "try again" });
  });
});

describe("Output on stdout", () => {
  it("keeps data and JSON exactly as given", () => {
    const io = capture();
    const value = { description: `${ESC}[2Jraw\u0007` };
    io.out.json(value);
    io.out.data(`KEY=${ESC}[31mvalue`);
    io.out.raw(`logs\r\n${ESC}[0m`);
    expect(io.stdout()).toBe(`${JSON.stringify(value, null, 2)}\nKEY=${ESC}[31mvalue\nlogs\r\n${ESC}[0m`);
    expect(JSON.parse(io.stdout().split("\n").slice(0, 3).join("\n"))).toEqual(value);
    expect(io.stderr()).toBe("");
  });
});
