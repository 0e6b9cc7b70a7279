import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  closedPort,
  ISO,
  modeOf,
  newFileMode,
  normalise,
  renderPlain,
  renderTable,
  UUID,
  withoutNotionVars,
} from "../helpers/cli.js";
import { OUR_NTN } from "../helpers/paths.js";
import { cliSuite } from "../helpers/cli-suite.js";
import { baseEnv, ntnBinary, ntn, type NtnResult } from "../helpers/run-ntn.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * Our ntn against a real Workyard server, as a user runs it: a worker project folder, the
 * NOTION_* variables (or a stored login), no terminal. Exit codes, stdout and stderr are asserted
 * apart; the expected text is the official ntn 0.4.0's as FINDINGS.md records it, unless a comment
 * says why ours differs. Most cases run the CLI in this process (its run() with captured output);
 * "errors and usage" and the server subprocess spawn the built binary end to end. Every test sets
 * up its own worker, so any one runs alone with -t.
 */

const NO_WORKER_ID =
  "error: No worker ID found. Provide a worker ID or run from a directory with workers.json.\n" +
  "  hint: Run `ntn workers deploy` first, or pass a worker ID explicitly.\n";
const CANNOT_CONFIRM = "error: Cannot confirm in a non-interactive environment.\n  hint: Use --yes to skip the confirmation prompt.\n";
const CANARY = "canary-ours-cli-5e1f0c";

function expectOk(result: NtnResult): void {
  expect(result.code, `stdout: ${result.stdout}\nstderr: ${result.stderr}`).toBe(0);
}

describe("our ntn against a Workyard server", () => {
  const suite = cliSuite("wy-ours");
  const { scratchDir, linkedWorker, madeToken } = suite;
  /** In this process. */
  const run = suite.runWith(ntn);
  /** The built binary, spawned. */
  const spawned = suite.runWith(ntnBinary);

  const secretNames = async (workerId: string): Promise<string[]> =>
    (await suite.server.call("ListSecrets", { workerId })).body.secrets.map((s: any) => s.key);

  function workersJson(dir = suite.projectDir): { workerId: string; workspaceId: string } {
    return JSON.parse(fs.readFileSync(path.join(dir, "workers.json"), "utf8"));
  }

  describe("workers", () => {
    it("create --name writes workers.json exactly as the official CLI does", async () => {
      const dir = scratchDir("create");
      const result = await run(["workers", "create", "--name", "created"], { cwd: dir });
      expectOk(result);
      expect(result.stdout).toBe("");
      expect(result.stderr).toBe("✔ Worker created\n");
      const text = fs.readFileSync(path.join(dir, "workers.json"), "utf8");
      const parsed = JSON.parse(text);
      const workerId = parsed.workerId;
      expect(workerId).toMatch(new RegExp(`^${UUID.source}$`));
      // Pretty JSON, fixed key order, no trailing newline.
      expect(text).toBe(
        `{\n  "version": "1",\n  "environment": "prod",\n  "workspaceId": "${suite.server.workspaceId}",\n  "workerId": "${workerId}"\n}`,
      );
      const got = await suite.server.call("GetWorker", { workerId });
      expect(got.body.worker).toMatchObject({ name: "created", spaceId: suite.server.workspaceId });
    });

    it("create refuses a folder that already has a worker, without a request", async () => {
      const before = (await suite.server.call("ListWorkers", {})).body.workers.length;
      const result = await run(["workers", "create", "--name", "again"]);
      expect(result.code).toBe(5);
      expect(result.stdout).toBe("");
      expect(result.stderr).toBe(
        `error: This directory already has a worker (${suite.projectWorkerId}).\n` +
          "  hint: Delete workers.json to create a new worker, or run `ntn workers deploy` to update the existing one.\n",
      );
      expect((await suite.server.call("ListWorkers", {})).body.workers.length).toBe(before);
    });

    it("create without --name and without a terminal cannot prompt (exit 1)", async () => {
      const dir = scratchDir("noname");
      const result = await run(["workers", "create"], { cwd: dir });
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(/^error: Prompt failed\n/);
      expect(fs.existsSync(path.join(dir, "workers.json"))).toBe(false);
    });

    it("list prints the table: header ID  NAME  CREATED  UPDATED, columns padded, last one not", async () => {
      // A second worker with a longer name, so the NAME column is padded.
      await suite.server.call("CreateWorker", { name: "a much longer worker name", uploadType: "source" });
      const { workers } = (await suite.server.call("ListWorkers", {})).body;
      const result = await run(["workers", "list"]);
      expectOk(result);
      expect(result.stderr).toBe("");
      expect(result.stdout).toBe(
        renderTable(
          ["ID", "NAME", "CREATED", "UPDATED"],
          workers.map((w: any) => [w.workerId, w.name, w.createdAt, w.updatedAt]),
        ),
      );
      const lines = result.stdout.split("\n");
      expect(lines[0]).toBe(`ID${" ".repeat(36)}NAME${" ".repeat(23)}CREATED${" ".repeat(19)}UPDATED`);
      expect(normalise(result.stdout)).toContain(`<ID>  ${"alpha".padEnd(27)}<TIME>  <TIME>\n`);
      for (const line of lines) expect(line).not.toMatch(/ $/);
      // The `ls` alias.
      expect((await run(["workers", "ls"])).stdout).toBe(result.stdout);
    });

    it("list --json prints the workers as the API returns them; --plain as tab-separated rows", async () => {
      const { workers } = (await suite.server.call("ListWorkers", {})).body;
      const json = await run(["workers", "list", "--json"]);
      expectOk(json);
      expect(json.stdout).toBe(`${JSON.stringify(workers, null, 2)}\n`);
      for (const w of JSON.parse(json.stdout)) {
        expect(Object.keys(w)).toEqual(["workerId", "name", "spaceId", "createdAt", "updatedAt"]);
        expect(w.createdAt).toMatch(new RegExp(`^${ISO.source}$`));
      }
      const plain = await run(["workers", "list", "--plain"]);
      expectOk(plain);
      expect(plain.stdout).toBe(renderPlain(workers.map((w: any) => [w.workerId, w.name, w.createdAt, w.updatedAt])));
      expect(plain.stderr).toBe("");
    });

    it("get shows the worker of workers.json, or the one named; --json and --plain", async () => {
      const workerId = suite.projectWorkerId;
      const { worker } = (await suite.server.call("GetWorker", { workerId })).body;
      const result = await run(["workers", "get"]);
      expectOk(result);
      expect(result.stdout).toBe(
        `ID           ${workerId}\n` +
          "Name         alpha\n" +
          `Space ID     ${suite.server.workspaceId}\n` +
          `Created at   ${worker.createdAt}\n` +
          `Updated at   ${worker.updatedAt}\n`,
      );
      const named = await run(["workers", "get", workerId], { cwd: scratchDir("get") });
      expect(named.stdout).toBe(result.stdout);
      const json = await run(["workers", "get", "--json"]);
      expect(JSON.parse(json.stdout)).toEqual(worker);
      const plain = await run(["workers", "get", "--plain"]);
      expect(plain.stdout).toBe(`${[workerId, "alpha", suite.server.workspaceId, worker.createdAt, worker.updatedAt].join("\t")}\n`);
    });

    it("get of an unknown worker fails with the server's message (exit 5)", async () => {
      const result = await run(["workers", "get", "no-such-worker"]);
      expect(result.code).toBe(5);
      expect(result.stdout).toBe("");
      // Ours prints the server's message and hint; the official CLI prefixes
      // `Failed to get worker (404 Not Found worker_not_found): ` (see official.test.ts).
      expect(result.stderr).toBe(
        'error: Worker "no-such-worker" not found.\n  hint: Run `ntn workers list` to see the workers of this workspace.\n',
      );
    });
  });

  describe("env", () => {
    it("set KEY=VALUE... stores them and says how many", async () => {
      const { dir, workerId } = await linkedWorker("env-set");
      const run = (argv: string[]) => ntn(argv, { cwd: dir, env: suite.env });
      const two = await run(["workers", "env", "set", "A=1", "B=2"]);
      expectOk(two);
      expect(two.stdout).toBe("");
      expect(two.stderr).toBe("✔ Set 2 environment variables\n");
      const one = await run(["workers", "env", "set", "ONE=1"]);
      expectOk(one);
      expect(one.stderr).toBe("✔ Set environment variable 'ONE'\n");
      const canary = await run(["workers", "env", "set", `CANARY=${CANARY}`]);
      expectOk(canary);
      expect(canary.stdout + canary.stderr).not.toContain(CANARY);
      const { env: pulled } = (await suite.server.call("PullEnv", { workerId })).body;
      expect(pulled).toEqual(
        expect.arrayContaining([
          { key: "A", value: "1" },
          { key: "B", value: "2" },
          { key: "ONE", value: "1" },
          { key: "CANARY", value: CANARY },
        ]),
      );
    });

    it("set without '=' fails before any request (exit 5), and so does an empty key", async () => {
      const { dir, workerId } = await linkedWorker("env-noeq");
      const noEq = await run(["workers", "env", "set", "GOOD=1", "NOEQ"], { cwd: dir });
      expect(noEq.code).toBe(5);
      expect(noEq.stdout).toBe("");
      expect(noEq.stderr).toBe("error: Invalid format 'NOEQ': expected KEY=VALUE\n");
      const emptyKey = await run(["workers", "env", "set", "=v"], { cwd: dir });
      expect(emptyKey.code).toBe(5);
      expect(emptyKey.stderr).toBe("error: Invalid format '=v': key must not be empty\n");
      expect(await secretNames(workerId)).toEqual([]);
    });

    it("set with a name the server refuses fails with its message (exit 5) and stores nothing", async () => {
      const { dir, workerId } = await linkedWorker("env-refused");
      const result = await run(["workers", "env", "set", "FINE=1", "1A=x"], { cwd: dir });
      expect(result.code).toBe(5);
      expect(result.stderr).toMatch(/^error: "1A" is not a valid environment variable name\.\n {2}hint: /);
      expect(await secretNames(workerId)).toEqual([]);
    });

    it("list shows names and dates, never values", async () => {
      const { dir, workerId } = await linkedWorker("env-list", { B: "2", A: "1", ONE: "1", CANARY });
      const { secrets } = (await suite.server.call("ListSecrets", { workerId })).body;
      const table = await run(["workers", "env", "list"], { cwd: dir });
      expectOk(table);
      expect(table.stdout).toBe(renderTable(["KEY", "CREATED AT"], secrets.map((s: any) => [s.key, s.createdAt])));
      expect(normalise(table.stdout)).toBe("KEY     CREATED AT\nA       <TIME>\nB       <TIME>\nCANARY  <TIME>\nONE     <TIME>\n");
      const json = await run(["workers", "env", "ls", "--json"], { cwd: dir });
      expectOk(json);
      expect(JSON.parse(json.stdout)).toEqual(secrets.map((s: any) => ({ key: s.key, createdAt: s.createdAt })));
      const plain = await run(["workers", "env", "list", "--plain"], { cwd: dir });
      expect(plain.stdout).toBe(renderPlain(secrets.map((s: any) => [s.key, s.createdAt])));
      for (const result of [table, json, plain]) {
        expect(result.stdout + result.stderr).not.toContain(CANARY);
        expect(result.stderr).toBe("");
      }
    });

    it("unset removes one variable; unsetting it again fails (exit 5)", async () => {
      const { dir, workerId } = await linkedWorker("env-unset", { A: "1", B: "2", CANARY, ONE: "1" });
      const result = await run(["workers", "env", "unset", "ONE"], { cwd: dir });
      expectOk(result);
      expect(result.stderr).toBe("✔ Unset environment variable 'ONE'\n");
      expect(await secretNames(workerId)).toEqual(["A", "B", "CANARY"]);
      const again = await run(["workers", "env", "rm", "ONE"], { cwd: dir });
      expect(again.code).toBe(5);
      expect(again.stderr).toMatch(/^error: .*"ONE"/);
    });

    it("list of a worker without variables says so on stderr", async () => {
      const { body } = await suite.server.call("CreateWorker", { name: "empty-env", uploadType: "source" });
      const result = await run(["workers", "env", "list", body.worker.workerId]);
      expectOk(result);
      expect(result.stdout).toBe("");
      expect(result.stderr).toBe("No environment variables found for this worker.\n");
    });

    // Each test writes a file of its own in one linked folder (the remote side is only read).
    describe("pull", () => {
      let dir: string;
      const remote = {
        SAME: "v1",
        CHANGED: "new",
        QUOTED_SAME: "a b #c",
        DUP: "remote",
        NEW_Z: "z",
        NEW_A: "a b",
        SPACED: "sv",
        SQ_SAME: "single",
        EMPTY: "",
        NL: "line1\nline2",
      };

      beforeAll(async () => {
        ({ dir } = await linkedWorker("pull", remote));
      });

      it("writes a new .env without asking, keys sorted, values quoted as the official CLI does", async () => {
        const result = await run(["workers", "env", "pull"], { cwd: dir });
        expectOk(result);
        expect(result.stdout).toBe("");
        expect(result.stderr).toBe("✔ Environment variables written to .env\n");
        const file = path.join(dir, ".env");
        expect(fs.readFileSync(file, "utf8")).toBe(
          [
            "CHANGED=new",
            "DUP=remote",
            'EMPTY=""',
            "NEW_A=a b",
            "NEW_Z=z",
            'NL="line1\\nline2"',
            'QUOTED_SAME="a b #c"',
            "SAME=v1",
            "SPACED=sv",
            "SQ_SAME=single",
            "",
          ].join("\n"),
        );
        expect(modeOf(file)).toBe(newFileMode());
        const again = await run(["workers", "env", "pull"], { cwd: dir });
        expectOk(again);
        expect(again.stderr).toBe("✔ .env is already up to date\n");
      });

      // The worked example of FINDINGS 9.4, less its `export` line (next test).
      const existing = [
        "# header comment",
        "",
        "SAME=v1",
        "CHANGED=old # inline comment",
        'QUOTED_SAME="a b #c"',
        "DUP=first",
        "DUP=second",
        "FOREIGN=keepme",
        "  SPACED = sv ",
        "SQ_SAME='single'",
        'EMPTY=""',
        'NL="line1\\nline2"',
        "not a valid line",
        "# trailing comment",
      ].join("\n");

      it("asks before changing an existing file: without --yes and a terminal it shows the diff, exits 1, changes nothing", async () => {
        const file = path.join(dir, "merge.env");
        fs.writeFileSync(file, existing);
        const result = await run(["workers", "env", "pull", "--file", "merge.env"], { cwd: dir });
        expect(result.code).toBe(1);
        expect(result.stdout).toBe("");
        expect(result.stderr).toBe(
          "The following changes will be made to merge.env:\n  + NEW_A\n  + NEW_Z\n  ~ CHANGED\n  ~ DUP\n" + CANNOT_CONFIRM,
        );
        expect(fs.readFileSync(file, "utf8")).toBe(existing);
      });

      it("with --yes merges: comments, blank, foreign and invalid lines stay, keys update in place, new ones are appended sorted", async () => {
        const file = path.join(dir, "merge.env");
        fs.writeFileSync(file, existing);
        fs.chmodSync(file, 0o600);
        const result = await run(["workers", "env", "pull", "--file", "merge.env", "--yes"], { cwd: dir });
        expectOk(result);
        // No diff with --yes, just the status line.
        expect(result.stderr).toBe("✔ Environment variables written to merge.env\n");
        expect(fs.readFileSync(file, "utf8")).toBe(
          [
            "# header comment",
            "",
            "SAME=v1",
            "CHANGED=new",
            'QUOTED_SAME="a b #c"',
            "DUP=remote",
            "DUP=remote",
            "FOREIGN=keepme",
            "SPACED=sv",
            "SQ_SAME=single",
            'EMPTY=""',
            'NL="line1\\nline2"',
            "not a valid line",
            "# trailing comment",
            "NEW_A=a b",
            "NEW_Z=z",
            "",
          ].join("\n"),
        );
        // Written in place: the file keeps its mode.
        expect(modeOf(file)).toBe(0o600);
        const again = await run(["workers", "env", "pull", "--file", "merge.env"], { cwd: dir });
        expect(again.stderr).toBe("✔ merge.env is already up to date\n");
      });

      // A deliberate difference (README): the official CLI keeps `export SAME=...` as a foreign line
      // and appends SAME=...; ours updates the line in place and keeps its `export`.
      it("updates an `export KEY=...` line in place, keeping the export", async () => {
        const file = path.join(dir, "export.env");
        fs.writeFileSync(file, "export SAME=local\nFOREIGN=x\n");
        const result = await run(["workers", "env", "pull", "--file", "export.env", "--yes"], { cwd: dir });
        expectOk(result);
        const text = fs.readFileSync(file, "utf8");
        expect(text.split("\n").slice(0, 2)).toEqual(["export SAME=v1", "FOREIGN=x"]);
        expect(text).not.toMatch(/^SAME=/m);
      });

      it("--no-file --yes prints the variables on stdout, sorted, and writes nothing", async () => {
        const before = fs.readdirSync(dir).sort();
        const result = await run(["workers", "env", "pull", "--no-file", "--yes"], { cwd: dir });
        expectOk(result);
        expect(result.stderr).toBe("");
        const lines = result.stdout.trimEnd().split("\n");
        expect(lines).toEqual([...lines].sort());
        expect(lines).toEqual([
          "CHANGED=new",
          "DUP=remote",
          'EMPTY=""',
          "NEW_A=a b",
          "NEW_Z=z",
          'NL="line1\\nline2"',
          'QUOTED_SAME="a b #c"',
          "SAME=v1",
          "SPACED=sv",
          "SQ_SAME=single",
        ]);
        expect(fs.readdirSync(dir).sort()).toEqual(before);
      });

      it("--no-file without --yes warns and needs a terminal (exit 1), printing no value", async () => {
        const result = await run(["workers", "env", "pull", "--no-file"], { cwd: dir });
        expect(result.code).toBe(1);
        expect(result.stdout).toBe("");
        expect(result.stderr).toBe(`warning: This will print potentially secret values to the terminal.\n${CANNOT_CONFIRM}`);
      });
    });

    describe("push", () => {
      const REMOTE = { KEEP: "same", CHANGE: "old", REMOTE_ONLY: "stays" };
      const LOCAL = '# local\nKEEP=same\nCHANGE=new\nADDED="two words"\n';
      /** A worker with REMOTE's variables, its folder holding `dotenv` as .env (when given). */
      async function pushProject(dotenv?: string) {
        const { dir, workerId } = await linkedWorker("push", REMOTE);
        if (dotenv !== undefined) fs.writeFileSync(path.join(dir, ".env"), dotenv);
        const pulled = async () =>
          Object.fromEntries((await suite.server.call("PullEnv", { workerId })).body.env.map((e: any) => [e.key, e.value]));
        return { dir, pulled };
      }

      it("fails to read a missing file (exit 1) before any request", async () => {
        const { dir } = await pushProject();
        const result = await run(["workers", "env", "push"], { cwd: dir });
        expect(result.code).toBe(1);
        expect(result.stderr).toMatch(/^error: Failed to read \.env\n/);
      });

      it("shows the diff and needs --yes without a terminal (exit 1), pushing nothing", async () => {
        const { dir, pulled } = await pushProject(LOCAL);
        const result = await run(["workers", "env", "push"], { cwd: dir });
        expect(result.code).toBe(1);
        expect(result.stdout).toBe("");
        expect(result.stderr).toBe(`The following changes will be pushed to the remote environment:\n  + ADDED\n  ~ CHANGE\n${CANNOT_CONFIRM}`);
        expect(await pulled()).toEqual({ KEEP: "same", CHANGE: "old", REMOTE_ONLY: "stays" });
      });

      it("with --yes upserts the file's variables and never deletes remote ones", async () => {
        const { dir, pulled } = await pushProject(LOCAL);
        const result = await run(["workers", "env", "push", "--yes"], { cwd: dir });
        expectOk(result);
        expect(result.stderr).toBe("✔ Environment variables pushed successfully\n");
        expect(await pulled()).toEqual({ KEEP: "same", CHANGE: "new", ADDED: "two words", REMOTE_ONLY: "stays" });
      });

      it("says when the remote is already up to date", async () => {
        const { dir } = await pushProject("KEEP=same\nCHANGE=old\n");
        const result = await run(["workers", "env", "push"], { cwd: dir });
        expectOk(result);
        expect(result.stderr).toBe("✔ Remote environment variables are already up to date\n");
      });
    });
  });

  describe("tokens", () => {
    it("create prints the token on stdout and the status on stderr", async () => {
      const result = await run(["tokens", "create", "ci token"]);
      expectOk(result);
      expect(result.stdout).toMatch(/^wy_[A-Za-z0-9_-]{20,}\n$/);
      const token = result.stdout.trim();
      const me = await run(["whoami", "--json"], { env: { ...suite.env, NOTION_API_TOKEN: token } });
      expect(JSON.parse(me.stdout).tokenName).toBe("ci token");
      // Byte for byte the official CLI's (FINDINGS 14), blank line at the end included.
      expect(result.stderr).toBe("✔ Token created\nWarning: Save this token now — it will not be shown again.\n\n");
    });

    it("create --plain prints the token alone", async () => {
      const result = await run(["tokens", "create", "plain token", "--plain"]);
      expectOk(result);
      expect(result.stdout).toMatch(/^wy_[A-Za-z0-9_-]{20,}\n$/);
      expect(result.stderr).toBe("");
    });

    it("list prints the tokens (EXPIRES AT 'never', an empty REVOKED AT), --json and --plain", async () => {
      await madeToken("listed token");
      const { tokens } = (await suite.server.call("ListTokens", {})).body;
      const rows = tokens.map((t: any) => [t.id, t.name, t.issuedAt, t.expiresAt, t.revokedAt ?? ""]);
      const table = await run(["tokens", "list"]);
      expectOk(table);
      expect(table.stdout).toBe(renderTable(["ID", "NAME", "ISSUED AT", "EXPIRES AT", "REVOKED AT"], rows));
      // An empty last cell still leaves the two-space separator.
      const nameWidth = Math.max(...tokens.map((t: any) => t.name.length));
      expect(normalise(table.stdout)).toContain(`<ID>  ${"listed token".padEnd(nameWidth + 2)}<TIME>  ${"never".padEnd(12)}\n`);
      expect(table.stdout).not.toContain("wy_");
      const json = await run(["tokens", "ls", "--json"]);
      expectOk(json);
      expect(JSON.parse(json.stdout)).toEqual(
        tokens.map((t: any) => ({ id: t.id, name: t.name, issuedAt: t.issuedAt, expiresAt: t.expiresAt, revokedAt: t.revokedAt ?? null })),
      );
      const plain = await run(["tokens", "list", "--plain"]);
      expect(plain.stdout).toBe(renderPlain(rows));
    });

    it("revoke without --yes needs a terminal (exit 1) and revokes nothing", async () => {
      const { id: tokenId, token } = await madeToken("kept token");
      const result = await run(["tokens", "revoke", tokenId]);
      expect(result.code).toBe(1);
      expect(result.stderr).toBe(CANNOT_CONFIRM);
      expect((await suite.server.call("ListWorkers", {}, token)).status).toBe(200);
    });

    it("revoke --yes revokes; the token then gets exit 4 on any command", async () => {
      const { id: tokenId, token } = await madeToken("revoked token");
      const result = await run(["tokens", "revoke", tokenId, "--yes"]);
      expectOk(result);
      expect(result.stderr).toBe("✔ Token revoked\n");
      const revokedEnv = { ...suite.env, NOTION_API_TOKEN: token };
      for (const argv of [["workers", "list"], ["workers", "get"], ["workers", "env", "list"], ["tokens", "list"], ["whoami"]]) {
        const denied = await run(argv, { env: revokedEnv });
        expect(denied.code, `${argv.join(" ")}: ${denied.stderr}`).toBe(4);
        expect(denied.stdout).toBe("");
        expect(denied.stderr).toMatch(/^error: This API token was revoked\.\n {2}hint: /);
        expect(denied.stderr).not.toContain(token);
      }
      const listed = await run(["tokens", "list", "--json"]);
      expect(JSON.parse(listed.stdout).find((t: any) => t.id === tokenId).revokedAt).toMatch(new RegExp(`^${ISO.source}$`));
    });
  });

  // End to end through the built binary: exit codes and streams as a shell sees them.
  describe("errors and usage", () => {
    it("a command that needs a worker, with no workers.json and no id, exits 5", async () => {
      const dir = scratchDir("noworker");
      for (const argv of [
        ["workers", "get"],
        ["workers", "delete", "--yes"],
        ["workers", "env", "list"],
        ["workers", "env", "set", "A=1"],
        ["workers", "env", "unset", "A"],
        ["workers", "env", "pull"],
      ]) {
        const result = await spawned(argv, { cwd: dir });
        expect(result.code, argv.join(" ")).toBe(5);
        expect(result.stdout).toBe("");
        expect(result.stderr).toBe(NO_WORKER_ID);
      }
    });

    it.each([
      [["workers", "list", "--bogus"], /--bogus/],
      [["tokens", "create"], /NAME/],
      [["workers", "env", "set"], /VARS/],
      [["workers", "list", "--json", "--plain"], /--json.*--plain|--plain.*--json/],
      [["frobnicate"], /frobnicate/],
      [["workers", "frobnicate"], /frobnicate/],
    ])("usage error %j exits 2 with a message and the --help pointer", async (argv, pattern) => {
      const result = await spawned(argv);
      expect(result.code).toBe(2);
      expect(result.stdout).toBe("");
      expect(result.stderr).toMatch(/^error: /);
      expect(result.stderr).toMatch(pattern);
      expect(result.stderr).toContain("--help");
    });

    it("`ntn workers` alone prints its help on stderr and exits 2", async () => {
      const result = await spawned(["workers"]);
      expect(result.code).toBe(2);
      expect(result.stdout).toBe("");
      expect(result.stderr).toMatch(/Usage: ntn workers/);
      for (const command of ["create", "delete", "deploy", "env", "get", "list"]) expect(result.stderr).toContain(command);
    });

    it("--version and --help go to stdout, exit 0", async () => {
      const version = await spawned(["--version"]);
      expectOk(version);
      expect(version.stdout).toMatch(/^ntn \d+\.\d+\.\d+/);
      expect(version.stderr).toBe("");
      expect((await spawned(["-V"])).stdout).toBe(version.stdout);
      const help = await spawned(["workers", "env", "--help"]);
      expectOk(help);
      expect(help.stdout).toMatch(/Usage: ntn workers env/);
    });

    it("a server that is not running: exit 5 naming the URL", async () => {
      const port = await closedPort();
      const url = `http://127.0.0.1:${port}`;
      const result = await spawned(["workers", "list"], { env: { ...suite.env, NOTION_API_BASE_URL: url } });
      expect(result.code).toBe(5);
      expect(result.stdout).toBe("");
      expect(result.stderr).toMatch(new RegExp(`^error: .*${url.replaceAll(".", "\\.")}`));
      expect(result.stderr).not.toMatch(/\n\s+at /);
    });
  });

  describe("whoami, login, logout", () => {
    it("whoami names the server, workspace and token; --json has {url, workspaceId, workspaceName, tokenName}", async () => {
      const text = await run(["whoami"]);
      expectOk(text);
      expect(text.stdout).toContain(suite.server.url);
      expect(text.stdout).toContain(suite.server.workspaceId);
      expect(text.stdout).not.toContain(suite.server.adminToken);
      const json = await run(["whoami", "--json"]);
      expectOk(json);
      expect(JSON.parse(json.stdout)).toEqual({
        url: suite.server.url,
        workspaceId: suite.server.workspaceId,
        workspaceName: "Default workspace",
        tokenName: "admin",
      });
    });

    it("login URL --with-token stores the login; commands then work with no NOTION_* variable; logout ends it", async () => {
      const loginHome = { dir: scratchDir("login-home") };
      const bare = withoutNotionVars(baseEnv(loginHome.dir));
      const dir = scratchDir("login-project");

      const before = await run(["workers", "list"], { cwd: dir, env: bare });
      expect(before.code).toBe(4);
      expect(before.stderr).toMatch(/^error: Not logged in/);

      const login = await run(["login", suite.server.url, "--with-token"], { cwd: dir, env: bare, input: `${suite.server.adminToken}\n` });
      expectOk(login);
      expect(login.stdout).toBe("");
      expect(login.stderr).toBe(`✔ Logged in to ${suite.server.url} (workspace Default workspace)\n`);
      expect(login.stderr + login.stdout).not.toContain(suite.server.adminToken);
      const state = path.join(loginHome.dir, ".config", "workyard", "auth.json");
      expect(modeOf(state)).toBe(0o600);
      // Never the official CLI's files.
      expect(fs.existsSync(path.join(loginHome.dir, ".config", "notion"))).toBe(false);
      expect(fs.existsSync(path.join(loginHome.dir, ".notion"))).toBe(false);

      const listed = await run(["workers", "list", "--json"], { cwd: dir, env: bare });
      expectOk(listed);
      expect(JSON.parse(listed.stdout).map((w: any) => w.name)).toContain("alpha");
      const me = await run(["whoami", "--json"], { cwd: dir, env: bare });
      expect(JSON.parse(me.stdout)).toEqual({
        url: suite.server.url,
        workspaceId: suite.server.workspaceId,
        workspaceName: "Default workspace",
        tokenName: "admin",
      });
      const created = await run(["workers", "create", "--name", "from-login"], { cwd: dir, env: bare });
      expectOk(created);
      expect(workersJson(dir).workspaceId).toBe(suite.server.workspaceId);

      const logout = await run(["logout"], { cwd: dir, env: bare });
      expectOk(logout);
      expect(logout.stderr).toBe(`✔ Logged out of ${suite.server.url}\n`);
      const after = await run(["workers", "list"], { cwd: dir, env: bare });
      expect(after.code).toBe(4);
      expect(after.stderr).toMatch(/^error: Not logged in/);
    });

    it("login with a wrong token exits 4 and stores nothing; with no token on stdin it fails", async () => {
      const loginHome = { dir: scratchDir("badlogin-home") };
      const bare = withoutNotionVars(baseEnv(loginHome.dir));
      const wrong = await run(["login", suite.server.url, "--with-token"], { env: bare, input: "wy_wrong\n" });
      expect(wrong.code).toBe(4);
      expect(wrong.stderr).toMatch(/^error: Invalid API token\./);
      expect(fs.existsSync(path.join(loginHome.dir, ".config", "workyard", "auth.json"))).toBe(false);
      const empty = await run(["login", suite.server.url, "--with-token"], { env: bare, input: "" });
      expect(empty.code).toBe(5);
      expect(empty.stderr).toMatch(/^error: No token on stdin\./);
    });
  });

  describe("delete", () => {
    it("delete without --yes needs a terminal (exit 1); with --yes deletes and keeps workers.json", async () => {
      const { dir, workerId } = await linkedWorker("to-delete");
      const run = (argv: string[]) => ntn(argv, { cwd: dir, env: suite.env });
      const refused = await run(["workers", "delete"]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toBe(CANNOT_CONFIRM);
      expect((await suite.server.call("GetWorker", { workerId })).status).toBe(200);

      const before = fs.readFileSync(path.join(dir, "workers.json"), "utf8");
      const result = await run(["workers", "delete", "--yes"]);
      expectOk(result);
      expect(result.stdout).toBe("");
      expect(result.stderr).toBe("✔ Worker deleted\n");
      expect((await suite.server.call("GetWorker", { workerId })).status).toBe(404);
      expect(fs.readFileSync(path.join(dir, "workers.json"), "utf8")).toBe(before);

      const gone = await run(["workers", "get"]);
      expect(gone.code).toBe(5);
      expect(gone.stderr).toContain(`Worker "${workerId}" not found.`);
    });
  });
});

/** `ntn server --port 0` in a HOME of its own, as a user starts it; resolves once it listens. */
async function spawnServer(home: string) {
  const data = path.join(home, "data");
  const child = spawn(process.execPath, [OUR_NTN, "server", "--port", "0", "--data-dir", data], {
    cwd: home,
    env: baseEnv(home),
    stdio: ["ignore", "pipe", "pipe"],
  });
  const output = { stdout: "", stderr: "" };
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  child.stdout!.on("data", (chunk: Buffer) => (output.stdout += chunk.toString("utf8")));
  child.stderr!.on("data", (chunk: Buffer) => (output.stderr += chunk.toString("utf8")));
  const url = await new Promise<string>((resolve, reject) => {
    const check = () => {
      const match = /^Listening on (http:\/\/127\.0\.0\.1:\d+)$/m.exec(output.stdout);
      if (match) {
        child.stdout!.off("data", check);
        resolve(match[1]!);
      }
    };
    child.stdout!.on("data", check);
    child.on("exit", (code) => reject(new Error(`ntn server exited with ${code} before listening.\n${output.stdout}\n${output.stderr}`)));
  });
  return {
    child,
    data,
    url,
    output,
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGKILL");
        await exited;
      }
    },
  };
}

describe("ntn server as a subprocess", () => {
  let home: { dir: string; cleanup(): void };
  let server: Awaited<ReturnType<typeof spawnServer>>;
  let data: string;
  let stdout = "";
  let stderr = "";
  let url: string;
  let workspaceId: string;

  beforeAll(async () => {
    home = tempDir("wy-ours-server-home-");
    server = await spawnServer(home.dir);
    ({ data, url } = server);
    ({ stdout, stderr } = server.output);
    workspaceId = /NOTION_WORKSPACE_ID=(\S+)/.exec(stdout)![1]!;
  });
  afterAll(async () => {
    await server?.stop();
    home?.cleanup();
  });

  const bare = () => withoutNotionVars(baseEnv(home.dir));

  it("prints how to point the official CLI at it: the command for the token, never the token", async () => {
    const token = fs.readFileSync(path.join(data, "admin-token"), "utf8").trim();
    expect(token).toMatch(/^wy_/);
    expect(stdout).toMatch(new RegExp(`^ {2}(export )?NOTION_API_BASE_URL=${url.replaceAll(".", "\\.")}$`, "m"));
    expect(stdout).toMatch(new RegExp(`^ {2}(export )?NOTION_WORKSPACE_ID=${UUID.source}$`, "m"));
    expect(stdout).toContain(`NOTION_API_TOKEN="$(cat ${path.join(data, "admin-token")})"\n`);
    expect(stdout).not.toContain(token);
    expect(stderr).not.toContain(token);
    // Listening comes last, once it accepts requests.
    expect(stdout.trimEnd().split("\n").at(-1)).toBe(`Listening on ${url}`);
  });

  it("writes the admin token with mode 0600", () => {
    expect(modeOf(path.join(data, "admin-token"))).toBe(0o600);
  });

  it("logs this machine's CLI in: workers list works with only XDG_CONFIG_HOME", async () => {
    const dir = fs.mkdtempSync(path.join(home.dir, "project-"));
    const listedBefore = await ntnBinary(["workers", "list", "--json"], { cwd: dir, env: bare() });
    expect(listedBefore.code, listedBefore.stderr).toBe(0);
    const created = await ntnBinary(["workers", "create", "--name", "logged-in-worker"], { cwd: dir, env: bare() });
    expect(created.code, created.stderr).toBe(0);
    const listed = await ntnBinary(["workers", "list", "--json"], { cwd: dir, env: bare() });
    const names = (text: string) => JSON.parse(text).map((w: any) => w.name);
    expect(names(listed.stdout)).toEqual([...names(listedBefore.stdout), "logged-in-worker"]);
    const me = await ntnBinary(["whoami", "--json"], { cwd: dir, env: bare() });
    expect(JSON.parse(me.stdout)).toMatchObject({ url, workspaceId });
  });

  it("server workspace create makes a workspace whose token (a 0600 file) works and sees no other workspace's workers", async () => {
    const result = await ntnBinary(["server", "workspace", "create", "Second team", "--data-dir", data], { cwd: home.dir, env: bare() });
    expect(result.code, result.stderr).toBe(0);
    const secondId = result.stdout.trim();
    expect(secondId).toMatch(new RegExp(`^${UUID.source}$`));
    expect(secondId).not.toBe(workspaceId);
    const tokenFile = /its token is in (\S+)\n/.exec(result.stderr)![1]!;
    // In the store given by --data-dir (the one the running server uses), not the default one.
    expect(tokenFile).toBe(path.join(data, "workspaces", `${secondId}.token`));
    expect(fs.existsSync(path.join(home.dir, ".local", "share", "workyard"))).toBe(false);
    expect(modeOf(tokenFile)).toBe(0o600);
    const token = fs.readFileSync(tokenFile, "utf8").trim();
    expect(result.stdout + result.stderr).not.toContain(token);

    const env = { ...bare(), NOTION_API_BASE_URL: url, NOTION_API_TOKEN: token, NOTION_WORKSPACE_ID: secondId };
    const dir = path.join(home.dir, "second");
    fs.mkdirSync(dir);
    const listed = await ntnBinary(["workers", "list"], { cwd: dir, env });
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toBe("");
    expect(listed.stderr).toBe("No workers found in this workspace.\n");
    const me = await ntnBinary(["whoami", "--json"], { cwd: dir, env });
    expect(JSON.parse(me.stdout)).toMatchObject({ workspaceId: secondId, workspaceName: "Second team" });
    // A worker of the first workspace, by id, answers like an unknown one.
    const firstDir = fs.mkdtempSync(path.join(home.dir, "first-"));
    expect((await ntnBinary(["workers", "create", "--name", "first-workspace-worker"], { cwd: firstDir, env: bare() })).code).toBe(0);
    const firstWorker = JSON.parse(fs.readFileSync(path.join(firstDir, "workers.json"), "utf8")).workerId;
    const foreign = await ntnBinary(["workers", "get", firstWorker], { cwd: dir, env });
    expect(foreign.code).toBe(5);
    expect(foreign.stderr).toContain(`Worker "${firstWorker}" not found.`);
  });

  it("in-process, the offline admin commands read the invocation's environment and directory, not this process's", async () => {
    // WORKYARD_DATA_DIR in the invocation's environment only; a relative --token-file against its cwd.
    const relative = fs.mkdtempSync(path.join(home.dir, "relative-"));
    const result = await ntn(["server", "workspace", "create", "Third team", "--token-file", "third.token"], { cwd: relative, env: { ...bare(), WORKYARD_DATA_DIR: data } });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toContain(`its token is in ${path.join(relative, "third.token")}`);
    const token = fs.readFileSync(path.join(relative, "third.token"), "utf8").trim();
    const me = await ntn(["whoami", "--json"], { cwd: relative, env: { ...bare(), NOTION_API_BASE_URL: url, NOTION_API_TOKEN: token, NOTION_WORKSPACE_ID: result.stdout.trim() } });
    expect(JSON.parse(me.stdout)).toMatchObject({ workspaceName: "Third team" });
  });

  it("stops on SIGTERM", async () => {
    // A server of its own: the others keep theirs.
    const own = tempDir("wy-ours-sigterm-");
    try {
      const stopping = await spawnServer(own.dir);
      stopping.child.kill("SIGTERM");
      expect(await stopping.exited).toBe(0);
      expect(stopping.output.stderr).not.toMatch(/\n\s+at /);
    } finally {
      own.cleanup();
    }
  });
});
