import { describe, expect, it } from "vitest";
import {
  envEntries,
  expiryComment,
  expiryComments,
  mergeEnv,
  parseEnvFile,
  parseLine,
  parseValue,
  renderLine,
  renderValue,
} from "./dotenv-file.js";

/** A value with every non-ASCII or control character as \uXXXX, for readable failure messages. */
const escaped = (value: string) => value.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
const remote = (entries: Record<string, string>) => new Map(Object.entries(entries));

describe("reading the official CLI's .env dialect", () => {
  it("takes the key before the first = and the trimmed rest as the value", () => {
    expect(parseLine("A=1")).toMatchObject({ key: "A", value: "1", exported: false });
    expect(parseLine("  B  =   spaced value   ")).toMatchObject({ key: "B", value: "spaced value" });
    expect(parseLine("C=a=b=c")).toMatchObject({ key: "C", value: "a=b=c" });
    expect(parseLine("D=")).toMatchObject({ key: "D", value: "" });
  });

  it("has no inline comments: # after a value is part of it", () => {
    expect(parseLine("A=1 # not a comment").value).toBe("1 # not a comment");
    expect(parseLine("A=#hash").value).toBe("#hash");
  });

  it("allows an export prefix and remembers it", () => {
    expect(parseLine("export A=1")).toMatchObject({ key: "A", value: "1", exported: true });
    expect(parseLine("export\t  B=2")).toMatchObject({ key: "B", value: "2", exported: true });
    expect(parseLine("exportC=3")).toMatchObject({ key: "exportC", value: "3", exported: false });
  });

  it("treats blank lines, comments, lines without = and lines without a key as no entry, keeping the raw text", () => {
    for (const raw of ["", "   ", "# A=1", "   # indented", "no equals sign", "=value", "  = x"]) {
      const line = parseLine(raw);
      expect(line.key).toBeUndefined();
      expect(line.raw).toBe(raw);
    }
  });

  it("unquotes double quotes with backslash escapes \\n \\r \\t, any other escaped char as itself", () => {
    expect(parseValue(String.raw`"line1\nline2\ttab\rcr"`)).toBe("line1\nline2\ttab\rcr");
    expect(parseValue(String.raw`"back\\slash \"q\" \x \#"`)).toBe('back\\slash "q" x #');
    expect(parseValue(String.raw`"ends with \"`)).toBe("ends with \\");
    expect(parseValue('"  kept spaces  "')).toBe("  kept spaces  ");
    expect(parseValue('""')).toBe("");
  });

  it("unquotes single quotes literally", () => {
    expect(parseValue(String.raw`'no \n escapes "here"'`)).toBe(String.raw`no \n escapes "here"`);
    expect(parseValue("''")).toBe("");
  });

  it("takes anything else as it is", () => {
    expect(parseValue('"unterminated')).toBe('"unterminated');
    expect(parseValue('"')).toBe('"');
    expect(parseValue("'")).toBe("'");
    expect(parseValue("it's")).toBe("it's");
    expect(parseValue(String.raw`back\slash`)).toBe(String.raw`back\slash`);
    expect(parseValue(`"mixed'`)).toBe(`"mixed'`);
  });

  it("gives a key defined twice its last value", () => {
    expect(envEntries("A=1\nB=2\nA=3\n")).toEqual(remote({ A: "3", B: "2" }));
  });

  it("reads LF and CRLF files alike, with or without a final newline", () => {
    const expected = remote({ A: "1", B: "two words" });
    expect(envEntries("A=1\nB=two words\n")).toEqual(expected);
    expect(envEntries("A=1\r\nB=two words\r\n")).toEqual(expected);
    expect(envEntries("A=1\r\nB=two words")).toEqual(expected);
    expect(parseEnvFile("A=1\r\nB=2\r\n").map((l) => l.raw)).toEqual(["A=1", "B=2"]);
    expect(parseEnvFile("")).toEqual([]);
  });
});

describe("writing values", () => {
  it.each([
    ["", '""'],
    [" leading", '" leading"'],
    ["trailing ", '"trailing "'],
    ["\tleading tab", String.raw`"\tleading tab"`],
    ["a#b", '"a#b"'],
    ['say "hi"', String.raw`"say \"hi\""`],
    ["line1\nline2", String.raw`"line1\nline2"`],
    ["a\rb", String.raw`"a\rb"`],
    ["'quoted'", `"'quoted'"`],
    ["a#\\b\tc", String.raw`"a#\\b\tc"`],
  ])("quotes %j as %s", (value, rendered) => {
    expect(renderValue(value)).toBe(rendered);
  });

  it.each([["it's"], ["two words"], ["back\\slash"], ["=lead"], ["plain"], ["a\tb"], ["x'"], ["https://h/p?a=1&b=2"]])(
    "leaves %j unquoted",
    (value) => {
      expect(renderValue(value)).toBe(value);
    },
  );

  it("renders a line with its export prefix when asked", () => {
    expect(renderLine("A", "x y")).toBe("A=x y");
    expect(renderLine("A", "", true)).toBe('export A=""');
  });

  const tricky = [
    "",
    " ",
    "  both  ",
    " leading",
    "trailing ",
    "\tleading tab",
    "a#b",
    "#",
    'say "hi"',
    '"',
    '"fully quoted"',
    "'single quoted'",
    "'",
    "'open",
    "close'",
    "it's",
    "two words",
    "back\\slash",
    "ends with backslash\\",
    "\\n is not a newline",
    "\\",
    "=lead",
    "a=b",
    "line1\nline2",
    "\n",
    "crlf\r\ninside",
    "a\rb",
    "tab\tinside",
    "€ ünïcødé ✓",
    '{"json":"value","n":[1,2]}',
    "-----BEGIN KEY-----\nAAAA\n-----END KEY-----\n",
  ];

  it.each(tricky.map((v) => [v]))("reads back %j as written", (value) => {
    expect(parseValue(renderValue(value))).toBe(value);
    expect(envEntries(`${renderLine("K", value)}\n`).get("K")).toBe(value);
    expect(envEntries(`${renderLine("K", value, true)}\r\n`).get("K")).toBe(value);
  });

  // The reader trims each line with String.prototype.trim(), which removes every Unicode white
  // space character, so the writer must quote a value that begins or ends with any of them, not
  // only with a space (or a leading tab): otherwise `env pull` then `env push` changes the secret.
  it("reads back values that begin or end with any white space the reader trims", () => {
    const whiteSpace = ["\t", "\u000b", "\f", "\u00a0", "\ufeff", "\u2028", "\u3000"];
    const lost: string[] = [];
    for (const ws of whiteSpace) {
      for (const value of [`${ws}x`, `x${ws}`]) {
        if (envEntries(`K=${renderValue(value)}\n`).get("K") !== value) lost.push(escaped(value));
      }
    }
    expect(lost).toEqual([]);
  });

  it("round-trips a whole file of tricky values through mergeEnv", () => {
    const values = remote(Object.fromEntries(tricky.map((v, i) => [`KEY_${String(i).padStart(2, "0")}`, v])));
    const { content } = mergeEnv("", values);
    expect(envEntries(content)).toEqual(values);
    // A second pull of the same values changes nothing.
    const again = mergeEnv(content, values);
    expect(again).toEqual({ added: [], changed: [], removed: [], content });
  });
});

describe("mergeEnv", () => {
  const existing = [
    "# my project settings",
    "",
    "FOREIGN=keep me",
    "API_KEY=old-1",
    "this line is not a variable",
    "=no key",
    "export TOKEN=old-token",
    "  # indented comment",
    "API_KEY=old-2",
    "SAME=unchanged",
    "",
  ].join("\n");

  it("rewrites remote keys in place, keeps everything else, appends new keys sorted", () => {
    const plan = mergeEnv(existing, remote({ ZED: "z", API_KEY: "new key", TOKEN: "t#2", SAME: "unchanged", ALPHA: "" }));
    expect(plan.added).toEqual(["ALPHA", "ZED"]);
    expect(plan.changed).toEqual(["API_KEY", "TOKEN"]);
    expect(plan.content).toBe(
      [
        "# my project settings",
        "",
        "FOREIGN=keep me",
        "API_KEY=new key",
        "this line is not a variable",
        "=no key",
        'export TOKEN="t#2"',
        "  # indented comment",
        "API_KEY=new key",
        "SAME=unchanged",
        'ALPHA=""',
        "ZED=z",
        "",
      ].join("\n"),
    );
    expect(envEntries(plan.content).get("FOREIGN")).toBe("keep me");
  });

  it("reports added and changed keys sorted", () => {
    const plan = mergeEnv("C=1\nA=1\nB=1\n", remote({ C: "2", Y: "1", A: "2", X: "1", B: "1" }));
    expect(plan.changed).toEqual(["A", "C"]);
    expect(plan.added).toEqual(["X", "Y"]);
  });

  it("counts a key as changed when its last value differs", () => {
    expect(mergeEnv("A=new\nA=old\n", remote({ A: "new" })).changed).toEqual(["A"]);
    expect(mergeEnv("A=old\nA=new\n", remote({ A: "new" })).changed).toEqual([]);
  });

  it("writes nothing when there is nothing", () => {
    expect(mergeEnv("", new Map())).toEqual({ added: [], changed: [], removed: [], content: "" });
  });

  it("normalises a file without a final newline, or with CRLF, to LF lines ending in a newline", () => {
    expect(mergeEnv("# c\nA=1", remote({ B: "2" })).content).toBe("# c\nA=1\nB=2\n");
    expect(mergeEnv("# c\r\nA=1\r\nKEEP=x\r\n", remote({ A: "2" })).content).toBe("# c\nA=2\nKEEP=x\n");
    expect(mergeEnv("A=1\r\nB=2", remote({})).content).toBe("A=1\nB=2\n");
  });

  it("writes expiry comments above token lines and replaces them on the next merge", () => {
    const key = "OAUTH_6769746875622D6F61757468_ACCESS_TOKEN";
    const first = mergeEnv(
      "# mine\nSECRET=s\n",
      remote({ [key]: "token-1", SECRET: "s" }),
      new Map([[key, expiryComment(key, "2030-01-01T00:00:00.000Z")]]),
    );
    expect(first.content).toBe(`# mine\nSECRET=s\n# ${key} expires 2030-01-01T00:00:00.000Z\n${key}=token-1\n`);

    const second = mergeEnv(first.content, remote({ [key]: "token-2", SECRET: "s" }), new Map([[key, expiryComment(key, "2030-01-02T00:00:00.000Z")]]));
    expect(second.content).toBe(`# mine\nSECRET=s\n# ${key} expires 2030-01-02T00:00:00.000Z\n${key}=token-2\n`);
    expect(second.content.match(/expires/g)).toHaveLength(1);
    expect(second.changed).toEqual([key]);
    expect(expiryComments(second.content)).toEqual(new Map([[key, new Date("2030-01-02T00:00:00.000Z")]]));

    // A third merge with the same values is a no-op.
    const third = mergeEnv(second.content, remote({ [key]: "token-2", SECRET: "s" }), new Map([[key, expiryComment(key, "2030-01-02T00:00:00.000Z")]]));
    expect(third.content).toBe(second.content);
  });

  it("leaves a user's comment above a token line alone", () => {
    const key = "OAUTH_41_ACCESS_TOKEN";
    const plan = mergeEnv(`# my note about the token\n${key}=old\n`, remote({ [key]: "new" }), new Map([[key, expiryComment(key, "2030-01-01T00:00:00Z")]]));
    expect(plan.content).toBe(`# my note about the token\n# ${key} expires 2030-01-01T00:00:00Z\n${key}=new\n`);
  });
});

describe("expiryComments", () => {
  it("reads back `# KEY expires <ISO time>` lines and ignores the rest", () => {
    const text = [
      "# A expires 2031-05-06T07:08:09.000Z",
      "A=x",
      "  # B expires 2032-01-01T00:00:00Z  ",
      "# C expires not-a-date",
      "# D expires soon, maybe",
      "# just a comment",
      "E=# F expires 2033-01-01T00:00:00Z",
      "",
    ].join("\r\n");
    expect(expiryComments(text)).toEqual(
      new Map([
        ["A", new Date("2031-05-06T07:08:09.000Z")],
        ["B", new Date("2032-01-01T00:00:00Z")],
      ]),
    );
  });
});

describe("mergeEnv removing dead keys", () => {
  it("takes a key and the expiry comment above it out of the file, and says so", () => {
    const existing = "A=1\n# OAUTH_41_ACCESS_TOKEN expires 2026-01-01T00:00:00.000Z\nOAUTH_41_ACCESS_TOKEN=dead\nB=2\n";
    const plan = mergeEnv(existing, new Map([["A", "1"]]), new Map(), new Set(["OAUTH_41_ACCESS_TOKEN"]));
    expect(plan.content).toBe("A=1\nB=2\n");
    expect(plan.removed).toEqual(["OAUTH_41_ACCESS_TOKEN"]);
  });

  it("reports nothing removed when the key was not in the file", () => {
    expect(mergeEnv("A=1\n", new Map([["A", "1"]]), new Map(), new Set(["GONE"])).removed).toEqual([]);
  });
});
