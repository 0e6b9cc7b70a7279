import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { closedPort, ISO, modeOf, newFileMode, normalise, renderPlain, renderTable, UUID } from "../helpers/cli.js";
import { cliSuite } from "../helpers/cli-suite.js";
import { officialNtn, type NtnResult } from "../helpers/run-ntn.js";

/**
 * The official ntn 0.4.0 from npm, unchanged, against a real Workyard server: the same outcomes as
 * our CLI's (ours.test.ts), with the official CLI's own wording (FINDINGS.md). Our error bodies carry
 * `name` and `message`, so the official CLI prints them as
 * `error: Failed to <what> (<status> <reason> <code>): <message>` instead of raw JSON.
 */

const NO_WORKER_ID =
  "error: No worker ID found. Provide a worker ID or run from a directory with workers.json.\n" +
  "  hint: Run `ntn workers deploy` first, or pass a worker ID explicitly.\n";
const CANNOT_CONFIRM = "error: Cannot confirm in a non-interactive environment.\n  hint: Use --yes to skip the confirmation prompt.\n";
const CANARY = "canary-official-cli-9b2d7e";

function expectOk(result: NtnResult): void {
  expect(result.code, `stdout: ${result.stdout}\nstderr: ${result.stderr}`).toBe(0);
}

describe("the official ntn 0.4.0 against a Workyard server", () => {
  const suite = cliSuite("wy-official");
  const { scratchDir, remoteEnv, madeToken } = suite;
  const workerFolder = suite.linkedWorker;
  const run = suite.runWith(officialNtn);

  it("is the official binary, version 0.4.0", async () => {
    const result = await run(["--version"]);
    expectOk(result);
    expect(result.stdout).toBe("ntn 0.4.0\n");
  });

  describe("workers", () => {
    it("create --name creates the worker (CreateWorker's url and fields parse) and writes workers.json", async () => {
      const dir = scratchDir("create");
      const result = await run(["workers", "create", "--name", "created"], { cwd: dir });
      expectOk(result);
      expect(result.stdout).toBe("");
      expect(result.stderr).toBe("✔ Worker created\n");
      const workerId = JSON.parse(fs.readFileSync(path.join(dir, "workers.json"), "utf8")).workerId;
      expect(workerId).toMatch(new RegExp(`^${UUID.source}$`));
      expect(fs.readFileSync(path.join(dir, "workers.json"), "utf8")).toBe(
        `{\n  "version": "1",\n  "environment": "prod",\n  "workspaceId": "${suite.server.workspaceId}",\n  "workerId": "${workerId}"\n}`,
      );
      expect((await suite.server.call("GetWorker", { workerId })).body.worker).toMatchObject({ name: "created", spaceId: suite.server.workspaceId });
    });

    it("create again in the same folder is refused before any request (exit 5)", async () => {
      const result = await run(["workers", "create", "--name", "again"]);
      expect(result.code).toBe(5);
      expect(result.stderr).toMatch(new RegExp(`^error: This directory already has a worker \\(${suite.projectWorkerId}\\)\\.\n`));
    });

    it("list, ls, --json, --plain", async () => {
      await suite.server.call("CreateWorker", { name: "a much longer worker name", uploadType: "source" });
      const { workers } = (await suite.server.call("ListWorkers", {})).body;
      const rows = workers.map((w: any) => [w.workerId, w.name, w.createdAt, w.updatedAt]);
      const table = await run(["workers", "list"]);
      expectOk(table);
      expect(table.stderr).toBe("");
      expect(table.stdout).toBe(renderTable(["ID", "NAME", "CREATED", "UPDATED"], rows));
      expect(normalise(table.stdout)).toContain(`<ID>  ${"alpha".padEnd(27)}<TIME>  <TIME>\n`);
      expect((await run(["workers", "ls"])).stdout).toBe(table.stdout);
      const json = await run(["workers", "list", "--json"]);
      expectOk(json);
      expect(json.stdout).toBe(`${JSON.stringify(workers, null, 2)}\n`);
      const plain = await run(["workers", "list", "--plain"]);
      expect(plain.stdout).toBe(renderPlain(rows));
    });

    it("get (workers.json or an id), --json, --plain", async () => {
      const workerId = suite.projectWorkerId;
      const { worker } = (await suite.server.call("GetWorker", { workerId })).body;
      const result = await run(["workers", "get"]);
      expectOk(result);
      expect(result.stdout).toBe(
        `ID           ${workerId}\nName         alpha\nSpace ID     ${suite.server.workspaceId}\n` +
          `Created at   ${worker.createdAt}\nUpdated at   ${worker.updatedAt}\n`,
      );
      expect((await run(["workers", "get", workerId], { cwd: scratchDir("get") })).stdout).toBe(result.stdout);
      expect(JSON.parse((await run(["workers", "get", "--json"])).stdout)).toEqual(worker);
      expect((await run(["workers", "get", "--plain"])).stdout).toBe(
        `${[workerId, "alpha", suite.server.workspaceId, worker.createdAt, worker.updatedAt].join("\t")}\n`,
      );
    });

    it("get of an unknown worker prints our error readably (exit 5)", async () => {
      const result = await run(["workers", "get", "no-such-worker"]);
      expect(result.code).toBe(5);
      expect(result.stdout).toBe("");
      // The official CLI prints no hint from the body; ours adds the server's hint (ours.test.ts).
      expect(result.stderr).toBe('error: Failed to get worker (404 Not Found worker_not_found): Worker "no-such-worker" not found.\n');
    });

    it("a command that needs a worker, with no workers.json and no id, exits 5", async () => {
      const result = await run(["workers", "get"], { cwd: scratchDir("noworker") });
      expect(result.code).toBe(5);
      expect(result.stderr).toBe(NO_WORKER_ID);
    });
  });

  describe("env", () => {
    it("set, set one, set NOEQ", async () => {
      const { dir, workerId } = await workerFolder("env-set");
      const run = (argv: string[]) => officialNtn(argv, { cwd: dir, env: suite.env });
      const two = await run(["workers", "env", "set", "A=1", "B=2"]);
      expectOk(two);
      expect(two.stdout).toBe("");
      expect(two.stderr).toBe("✔ Set 2 environment variables\n");
      const one = await run(["workers", "env", "set", "ONE=1"]);
      expect(one.stderr).toBe("✔ Set environment variable 'ONE'\n");
      const canary = await run(["workers", "env", "set", `CANARY=${CANARY}`]);
      expectOk(canary);
      const noEq = await run(["workers", "env", "set", "NOEQ"]);
      expect(noEq.code).toBe(5);
      expect(noEq.stderr).toBe("error: Invalid format 'NOEQ': expected KEY=VALUE\n");
      expect(await remoteEnv(workerId)).toEqual({ A: "1", B: "2", ONE: "1", CANARY });
    });

    it("set with a name our server refuses: a readable error (exit 5), nothing stored", async () => {
      // The official CLI checks no names itself; the server does.
      const { dir, workerId } = await workerFolder("env-refused");
      const result = await run(["workers", "env", "set", "FINE=1", "1A=x"], { cwd: dir });
      expect(result.code).toBe(5);
      expect(result.stdout).toBe("");
      expect(result.stderr).toBe(
        'error: Failed to set environment variables (400 Bad Request env_name_invalid): "1A" is not a valid environment variable name.\n',
      );
      expect(await remoteEnv(workerId)).toEqual({});
    });

    it("list, ls --json, --plain: names and dates, never values", async () => {
      const { dir, workerId } = await workerFolder("env-list", { B: "2", A: "1", ONE: "1", CANARY });
      const { secrets } = (await suite.server.call("ListSecrets", { workerId })).body;
      const rows = secrets.map((s: any) => [s.key, s.createdAt]);
      const table = await run(["workers", "env", "list"], { cwd: dir });
      expectOk(table);
      expect(table.stdout).toBe(renderTable(["KEY", "CREATED AT"], rows));
      expect(normalise(table.stdout)).toBe("KEY     CREATED AT\nA       <TIME>\nB       <TIME>\nCANARY  <TIME>\nONE     <TIME>\n");
      const json = await run(["workers", "env", "ls", "--json"], { cwd: dir });
      expect(JSON.parse(json.stdout)).toEqual(secrets.map((s: any) => ({ key: s.key, createdAt: s.createdAt })));
      const plain = await run(["workers", "env", "list", "--plain"], { cwd: dir });
      expect(plain.stdout).toBe(renderPlain(rows));
      for (const result of [table, json, plain]) expect(result.stdout + result.stderr).not.toContain(CANARY);
    });

    it("unset, and unset of a missing variable (readable 404, exit 5)", async () => {
      const { dir, workerId } = await workerFolder("env-unset", { A: "1", B: "2", CANARY, ONE: "1" });
      const result = await run(["workers", "env", "unset", "ONE"], { cwd: dir });
      expectOk(result);
      expect(result.stderr).toBe("✔ Unset environment variable 'ONE'\n");
      expect(Object.keys(await remoteEnv(workerId))).toEqual(["A", "B", "CANARY"]);
      const again = await run(["workers", "env", "rm", "ONE"], { cwd: dir });
      expect(again.code).toBe(5);
      expect(again.stderr).toBe(
        'error: Failed to unset environment variable (404 Not Found secret_not_found): Worker has no secret named "ONE".\n',
      );
    });

    describe("pull", () => {
      const remote = {
        SAME: "v1",
        CHANGED: "new",
        QUOTED_SAME: "a b #c",
        EXPORTED: "remote",
        DUP: "remote",
        NEW_Z: "z",
        NEW_A: "a b",
        SPACED: "sv",
        SQ_SAME: "single",
      };

      it("into a new file: written without asking, sorted", async () => {
        const { dir } = await workerFolder("pull-new", remote);
        const result = await run(["workers", "env", "pull"], { cwd: dir });
        expectOk(result);
        expect(result.stdout).toBe("");
        expect(result.stderr).toBe("✔ Environment variables written to .env\n");
        expect(fs.readFileSync(path.join(dir, ".env"), "utf8")).toBe(
          'CHANGED=new\nDUP=remote\nEXPORTED=remote\nNEW_A=a b\nNEW_Z=z\nQUOTED_SAME="a b #c"\nSAME=v1\nSPACED=sv\nSQ_SAME=single\n',
        );
        expect(modeOf(path.join(dir, ".env"))).toBe(newFileMode());
        const again = await run(["workers", "env", "pull"], { cwd: dir });
        expect(again.stderr).toBe("✔ .env is already up to date\n");
      });

      it("merging into an existing file: the FINDINGS 9.4 worked example (diff and exit 1, then --yes)", async () => {
        const { dir } = await workerFolder("pull-merge", remote);
        const before = [
          "# header comment",
          "",
          "SAME=v1",
          "CHANGED=old # inline comment",
          'QUOTED_SAME="a b #c"',
          "export EXPORTED=local",
          "DUP=first",
          "DUP=second",
          "FOREIGN=keepme",
          "  SPACED = sv ",
          "SQ_SAME='single'",
          "not a valid line",
          "# trailing comment",
        ].join("\n");
        const file = path.join(dir, ".env");
        fs.writeFileSync(file, before);

        const asked = await run(["workers", "env", "pull"], { cwd: dir });
        expect(asked.code).toBe(1);
        expect(asked.stdout).toBe("");
        expect(asked.stderr).toBe(
          "The following changes will be made to .env:\n  + EXPORTED\n  + NEW_A\n  + NEW_Z\n  ~ CHANGED\n  ~ DUP\n" + CANNOT_CONFIRM,
        );
        expect(fs.readFileSync(file, "utf8")).toBe(before);

        const merged = await run(["workers", "env", "pull", "--yes"], { cwd: dir });
        expectOk(merged);
        expect(merged.stderr).toBe("✔ Environment variables written to .env\n");
        // The official CLI reads `export EXPORTED` as another key: that line stays, EXPORTED is appended.
        // (Our CLI must do the same: ours.test.ts asserts it.)
        expect(fs.readFileSync(file, "utf8")).toBe(
          [
            "# header comment",
            "",
            "SAME=v1",
            "CHANGED=new",
            'QUOTED_SAME="a b #c"',
            "export EXPORTED=local",
            "DUP=remote",
            "DUP=remote",
            "FOREIGN=keepme",
            "SPACED=sv",
            "SQ_SAME=single",
            "not a valid line",
            "# trailing comment",
            "EXPORTED=remote",
            "NEW_A=a b",
            "NEW_Z=z",
            "",
          ].join("\n"),
        );
      });

      it("--no-file --yes prints the variables on stdout, sorted", async () => {
        const { dir } = await workerFolder("pull-stdout", { B: "2", A: "1", C: "three words" });
        const result = await run(["workers", "env", "pull", "--no-file", "--yes"], { cwd: dir });
        expectOk(result);
        expect(result.stdout).toBe("A=1\nB=2\nC=three words\n");
        expect(result.stderr).toBe("");
        expect(fs.existsSync(path.join(dir, ".env"))).toBe(false);
      });
    });

    describe("push", () => {
      it("--yes upserts every key of the file, never deletes remote ones; then up to date", async () => {
        const { dir, workerId } = await workerFolder("push", { KEEP: "same", CHANGE: "old", REMOTE_ONLY: "stays" });
        fs.writeFileSync(path.join(dir, ".env"), "# local\nKEEP=same\nCHANGE=new\nADDED=\"two words\"\n");

        const asked = await run(["workers", "env", "push"], { cwd: dir });
        expect(asked.code).toBe(1);
        expect(asked.stderr).toBe(`The following changes will be pushed to the remote environment:\n  + ADDED\n  ~ CHANGE\n${CANNOT_CONFIRM}`);
        expect(await remoteEnv(workerId)).toEqual({ KEEP: "same", CHANGE: "old", REMOTE_ONLY: "stays" });

        const pushed = await run(["workers", "env", "push", "--yes"], { cwd: dir });
        expectOk(pushed);
        expect(pushed.stderr).toBe("✔ Environment variables pushed successfully\n");
        expect(await remoteEnv(workerId)).toEqual({ KEEP: "same", CHANGE: "new", ADDED: "two words", REMOTE_ONLY: "stays" });

        const again = await run(["workers", "env", "push", "--yes"], { cwd: dir });
        expectOk(again);
        expect(again.stderr).toBe("✔ Remote environment variables are already up to date\n");
      });

      it("a pulled OAuth token variable pushed back is ignored by the server, the rest is stored", async () => {
        // `env pull` writes OAUTH_<hex>_ACCESS_TOKEN into .env and the official `env push` sends every key
        // back; the server keeps those names for the runtime (SPEC 4, "Reserved names").
        const { dir, workerId } = await workerFolder("push-reserved", {});
        const reserved = "OAUTH_6769746875622D6F61757468_ACCESS_TOKEN";
        fs.writeFileSync(path.join(dir, ".env"), `${reserved}=gho_stale\nOTHER=y\n`);
        const result = await run(["workers", "env", "push", "--yes"], { cwd: dir });
        expectOk(result);
        expect(await remoteEnv(workerId)).toEqual({ OTHER: "y" });
      });

      it("an `export X=..` line reaches the server as key `export X`: a readable refusal, nothing stored", async () => {
        // The official CLI sends the key as written (FINDINGS 9.6); ours strips `export ` instead.
        const { dir, workerId } = await workerFolder("push-export", {});
        fs.writeFileSync(path.join(dir, ".env"), "GOOD=1\nexport EXP=2\n");
        const result = await run(["workers", "env", "push", "--yes"], { cwd: dir });
        expect(result.code).toBe(5);
        expect(result.stderr).toBe(
          'error: Failed to set environment variables (400 Bad Request env_name_invalid): "export EXP" is not a valid environment variable name.\n',
        );
        expect(await remoteEnv(workerId)).toEqual({});
      });
    });
  });

  describe("tokens", () => {
    it("create prints the token on stdout, the status on stderr", async () => {
      const result = await run(["tokens", "create", "ci token"]);
      expectOk(result);
      expect(result.stdout).toMatch(/^wy_[A-Za-z0-9_-]{20,}\n$/);
      expect(result.stderr).toBe("✔ Token created\nWarning: Save this token now — it will not be shown again.\n\n");
      const token = result.stdout.trim();
      expect((await run(["workers", "list"], { env: { ...suite.env, NOTION_API_TOKEN: token } })).code).toBe(0);
    });

    it("create --plain, and --expires-in as typed", async () => {
      const plain = await run(["tokens", "create", "plain token", "--plain"]);
      expectOk(plain);
      expect(plain.stdout).toMatch(/^wy_[A-Za-z0-9_-]{20,}\n$/);
      expect(plain.stderr).toBe("");
      const month = await run(["tokens", "create", "month", "--expires-in", "30 days", "--plain"]);
      expectOk(month);
      const listed = (await suite.server.call("ListTokens", {})).body.tokens.find((t: any) => t.name === "month");
      expect(Date.parse(listed.expiresAt) - Date.parse(listed.issuedAt)).toBe(30 * 86_400_000);
    });

    it("list parses our ListTokens (expiresAt always a string), table, --json, --plain", async () => {
      await madeToken("listed token");
      expect((await suite.server.call("CreateToken", { name: "month", expiresIn: "30 days" })).status).toBe(200);
      const { tokens } = (await suite.server.call("ListTokens", {})).body;
      const rows = tokens.map((t: any) => [t.id, t.name, t.issuedAt, t.expiresAt, t.revokedAt ?? ""]);
      const table = await run(["tokens", "list"]);
      expectOk(table);
      expect(table.stdout).toBe(renderTable(["ID", "NAME", "ISSUED AT", "EXPIRES AT", "REVOKED AT"], rows));
      const nameWidth = Math.max(...tokens.map((t: any) => t.name.length)) + 2;
      expect(normalise(table.stdout)).toContain(`<ID>  ${"listed token".padEnd(nameWidth)}<TIME>  ${"never".padEnd(26)}\n`);
      expect(normalise(table.stdout)).toContain(`<ID>  ${"month".padEnd(nameWidth)}<TIME>  <TIME>  \n`);
      const json = await run(["tokens", "ls", "--json"]);
      expectOk(json);
      expect(JSON.parse(json.stdout)).toEqual(
        tokens.map((t: any) => ({ id: t.id, name: t.name, issuedAt: t.issuedAt, expiresAt: t.expiresAt, revokedAt: t.revokedAt ?? null })),
      );
      expect((await run(["tokens", "list", "--plain"])).stdout).toBe(renderPlain(rows));
    });

    it("revoke needs --yes without a terminal; revoke --yes; the revoked token then gets exit 4", async () => {
      const { id: tokenId, token } = await madeToken("revoked token");
      const refused = await run(["tokens", "revoke", tokenId]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toBe(CANNOT_CONFIRM);

      const result = await run(["tokens", "revoke", tokenId, "--yes"]);
      expectOk(result);
      expect(result.stderr).toBe("✔ Token revoked\n");
      const listed = JSON.parse((await run(["tokens", "list", "--json"])).stdout).find((t: any) => t.id === tokenId);
      expect(listed.revokedAt).toMatch(new RegExp(`^${ISO.source}$`));

      const denied = await run(["workers", "list"], { env: { ...suite.env, NOTION_API_TOKEN: token } });
      expect(denied.code).toBe(4);
      expect(denied.stdout).toBe("");
      // Any 401 reads the same in the official CLI; ours prints the server's reason (ours.test.ts).
      expect(denied.stderr).toBe("error: Failed to list workers: unauthorized\n  hint: run `ntn login` to authenticate\n");
    });
  });

  describe("delete and errors", () => {
    it("delete needs --yes without a terminal; delete --yes deletes and leaves workers.json", async () => {
      const { dir, workerId } = await workerFolder("to-delete");
      const run = (argv: string[]) => officialNtn(argv, { cwd: dir, env: suite.env });
      const refused = await run(["workers", "delete"]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toBe(CANNOT_CONFIRM);

      const before = fs.readFileSync(path.join(dir, "workers.json"), "utf8");
      const result = await run(["workers", "delete", "--yes"]);
      expectOk(result);
      expect(result.stderr).toBe("✔ Worker deleted\n");
      expect((await suite.server.call("GetWorker", { workerId })).status).toBe(404);
      expect(fs.readFileSync(path.join(dir, "workers.json"), "utf8")).toBe(before);

      const gone = await run(["workers", "env", "list"]);
      expect(gone.code).toBe(5);
      expect(gone.stderr).toBe(
        `error: Failed to list environment variables (404 Not Found worker_not_found): Worker "${workerId}" not found.\n`,
      );
    });

    it("another workspace's worker reads exactly like an unknown one", async () => {
      const { body } = await suite.server.call("CreateWorker", { name: "mine", uploadType: "source" });
      const mine = body.worker.workerId as string;
      const { createWorkspace } = await import("../../packages/server/src/workspaces/service.js");
      const { createTokenService } = await import("../../packages/server/src/auth/tokens.js");
      const db = suite.server.server.store.db;
      const other = await createWorkspace(db, createTokenService(db, suite.server.server.store.changes), "Other team");
      const otherEnv = { ...suite.env, NOTION_API_TOKEN: other.token, NOTION_WORKSPACE_ID: other.workspace.id };
      const foreign = await run(["workers", "get", mine], { env: otherEnv });
      const unknown = await run(["workers", "get", "00000000-0000-4000-8000-000000000000"], { env: otherEnv });
      expect(foreign.code).toBe(5);
      expect(foreign.stderr.replace(mine, "<ID>")).toBe(unknown.stderr.replace("00000000-0000-4000-8000-000000000000", "<ID>"));
    });

    it("a server that is not running: exit 5", async () => {
      const port = await closedPort();
      const result = await run(["workers", "list"], { env: { ...suite.env, NOTION_API_BASE_URL: `http://127.0.0.1:${port}` } });
      expect(result.code).toBe(5);
      // The official CLI names the URL only with -v; ours names it always (ours.test.ts).
      expect(result.stderr).toBe("error: Failed to list workers\n");
      const verbose = await run(["-v", "workers", "list"], { env: { ...suite.env, NOTION_API_BASE_URL: `http://127.0.0.1:${port}` } });
      expect(verbose.stderr).toContain(`http://127.0.0.1:${port}/api/v3/workersListWorkers`);
    });
  });
});
