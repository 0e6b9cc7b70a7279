import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { closedPort, ISO, modeOf, newFileMode, normalise, renderPlain, renderTable, UUID, workerProject } from "../helpers/cli.js";
import { baseEnv, officialNtn, type NtnResult } from "../helpers/run-ntn.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { tempDir } from "../helpers/tmp.js";

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
  let server: TestServer;
  let home: { dir: string; cleanup(): void };
  let project: { dir: string; cleanup(): void };
  let env: Record<string, string | undefined>;
  const cleanups: (() => void)[] = [];

  beforeAll(async () => {
    server = await startTestServer();
    home = tempDir("wy-official-home-");
    project = workerProject("wy-official-project-");
    env = {
      ...baseEnv(home.dir),
      NOTION_API_BASE_URL: server.url,
      NOTION_API_TOKEN: server.adminToken,
      NOTION_WORKSPACE_ID: server.workspaceId,
    };
  });
  afterAll(async () => {
    await server?.stop();
    home?.cleanup();
    project?.cleanup();
    for (const cleanup of cleanups) cleanup();
  });

  const run = (argv: string[], options: { cwd?: string; env?: Record<string, string | undefined> } = {}) =>
    officialNtn(argv, { cwd: options.cwd ?? project.dir, env: options.env ?? env });

  function scratchDir(prefix: string): string {
    const dir = tempDir(prefix);
    cleanups.push(dir.cleanup);
    return dir.dir;
  }

  function workerIdOf(dir = project.dir): string {
    return JSON.parse(fs.readFileSync(path.join(dir, "workers.json"), "utf8")).workerId;
  }

  /** A folder whose workers.json points at a new worker with these secrets. */
  async function workerFolder(prefix: string, secrets: Record<string, string>): Promise<{ dir: string; workerId: string }> {
    const dir = scratchDir(prefix);
    const { body } = await server.call("CreateWorker", { name: prefix, uploadType: "source" });
    const workerId = body.worker.workerId as string;
    fs.writeFileSync(
      path.join(dir, "workers.json"),
      JSON.stringify({ version: "1", environment: "prod", workspaceId: server.workspaceId, workerId }, null, 2),
    );
    if (Object.keys(secrets).length > 0) {
      const set = await server.call("UpsertSecrets", { workerId, secrets: Object.entries(secrets).map(([key, value]) => ({ key, value })) });
      expect(set.status).toBe(200);
    }
    return { dir, workerId };
  }

  async function remoteEnv(workerId: string): Promise<Record<string, string>> {
    return Object.fromEntries((await server.call("PullEnv", { workerId })).body.env.map((e: any) => [e.key, e.value]));
  }

  it("is the official binary, version 0.4.0", async () => {
    const result = await run(["--version"]);
    expectOk(result);
    expect(result.stdout).toBe("ntn 0.4.0\n");
  });

  describe("workers", () => {
    it("create --name creates the worker (CreateWorker's url and fields parse) and writes workers.json", async () => {
      const result = await run(["workers", "create", "--name", "alpha"]);
      expectOk(result);
      expect(result.stdout).toBe("");
      expect(result.stderr).toBe("✔ Worker created\n");
      const workerId = workerIdOf();
      expect(workerId).toMatch(new RegExp(`^${UUID.source}$`));
      expect(fs.readFileSync(path.join(project.dir, "workers.json"), "utf8")).toBe(
        `{\n  "version": "1",\n  "environment": "prod",\n  "workspaceId": "${server.workspaceId}",\n  "workerId": "${workerId}"\n}`,
      );
      expect((await server.call("GetWorker", { workerId })).body.worker).toMatchObject({ name: "alpha", spaceId: server.workspaceId });
    });

    it("create again in the same folder is refused before any request (exit 5)", async () => {
      const result = await run(["workers", "create", "--name", "again"]);
      expect(result.code).toBe(5);
      expect(result.stderr).toMatch(new RegExp(`^error: This directory already has a worker \\(${workerIdOf()}\\)\\.\n`));
    });

    it("list, ls, --json, --plain", async () => {
      await server.call("CreateWorker", { name: "a much longer worker name", uploadType: "source" });
      const { workers } = (await server.call("ListWorkers", {})).body;
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
      const workerId = workerIdOf();
      const { worker } = (await server.call("GetWorker", { workerId })).body;
      const result = await run(["workers", "get"]);
      expectOk(result);
      expect(result.stdout).toBe(
        `ID           ${workerId}\nName         alpha\nSpace ID     ${server.workspaceId}\n` +
          `Created at   ${worker.createdAt}\nUpdated at   ${worker.updatedAt}\n`,
      );
      expect((await run(["workers", "get", workerId], { cwd: scratchDir("wy-official-get-") })).stdout).toBe(result.stdout);
      expect(JSON.parse((await run(["workers", "get", "--json"])).stdout)).toEqual(worker);
      expect((await run(["workers", "get", "--plain"])).stdout).toBe(
        `${[workerId, "alpha", server.workspaceId, worker.createdAt, worker.updatedAt].join("\t")}\n`,
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
      const result = await run(["workers", "get"], { cwd: scratchDir("wy-official-noworker-") });
      expect(result.code).toBe(5);
      expect(result.stderr).toBe(NO_WORKER_ID);
    });
  });

  describe("env", () => {
    it("set, set one, set NOEQ", async () => {
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
      expect(await remoteEnv(workerIdOf())).toEqual({ A: "1", B: "2", ONE: "1", CANARY });
    });

    it("set with a name our server refuses: a readable error (exit 5), nothing stored", async () => {
      // The official CLI checks no names itself; the server does.
      const result = await run(["workers", "env", "set", "FINE=1", "1A=x"]);
      expect(result.code).toBe(5);
      expect(result.stdout).toBe("");
      expect(result.stderr).toBe(
        'error: Failed to set environment variables (400 Bad Request env_name_invalid): "1A" is not a valid environment variable name.\n',
      );
      expect(Object.keys(await remoteEnv(workerIdOf()))).not.toContain("FINE");
    });

    it("list, ls --json, --plain: names and dates, never values", async () => {
      const { secrets } = (await server.call("ListSecrets", { workerId: workerIdOf() })).body;
      const rows = secrets.map((s: any) => [s.key, s.createdAt]);
      const table = await run(["workers", "env", "list"]);
      expectOk(table);
      expect(table.stdout).toBe(renderTable(["KEY", "CREATED AT"], rows));
      expect(normalise(table.stdout)).toBe("KEY     CREATED AT\nA       <TIME>\nB       <TIME>\nCANARY  <TIME>\nONE     <TIME>\n");
      const json = await run(["workers", "env", "ls", "--json"]);
      expect(JSON.parse(json.stdout)).toEqual(secrets.map((s: any) => ({ key: s.key, createdAt: s.createdAt })));
      const plain = await run(["workers", "env", "list", "--plain"]);
      expect(plain.stdout).toBe(renderPlain(rows));
      for (const result of [table, json, plain]) expect(result.stdout + result.stderr).not.toContain(CANARY);
    });

    it("unset, and unset of a missing variable (readable 404, exit 5)", async () => {
      const result = await run(["workers", "env", "unset", "ONE"]);
      expectOk(result);
      expect(result.stderr).toBe("✔ Unset environment variable 'ONE'\n");
      expect(Object.keys(await remoteEnv(workerIdOf()))).toEqual(["A", "B", "CANARY"]);
      const again = await run(["workers", "env", "rm", "ONE"]);
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
        const { dir } = await workerFolder("official-pull-new", remote);
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
        const { dir } = await workerFolder("official-pull-merge", remote);
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
        const { dir } = await workerFolder("official-pull-stdout", { B: "2", A: "1", C: "three words" });
        const result = await run(["workers", "env", "pull", "--no-file", "--yes"], { cwd: dir });
        expectOk(result);
        expect(result.stdout).toBe("A=1\nB=2\nC=three words\n");
        expect(result.stderr).toBe("");
        expect(fs.existsSync(path.join(dir, ".env"))).toBe(false);
      });
    });

    describe("push", () => {
      it("--yes upserts every key of the file, never deletes remote ones; then up to date", async () => {
        const { dir, workerId } = await workerFolder("official-push", { KEEP: "same", CHANGE: "old", REMOTE_ONLY: "stays" });
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
        const { dir, workerId } = await workerFolder("official-push-reserved", {});
        const reserved = "OAUTH_6769746875622D6F61757468_ACCESS_TOKEN";
        fs.writeFileSync(path.join(dir, ".env"), `${reserved}=gho_stale\nOTHER=y\n`);
        const result = await run(["workers", "env", "push", "--yes"], { cwd: dir });
        expectOk(result);
        expect(await remoteEnv(workerId)).toEqual({ OTHER: "y" });
      });

      it("an `export X=..` line reaches the server as key `export X`: a readable refusal, nothing stored", async () => {
        // The official CLI sends the key as written (FINDINGS 9.6); ours strips `export ` instead.
        const { dir, workerId } = await workerFolder("official-push-export", {});
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
    let token: string;
    let tokenId: string;

    it("create prints the token on stdout, the status on stderr", async () => {
      const result = await run(["tokens", "create", "ci token"]);
      expectOk(result);
      expect(result.stdout).toMatch(/^wy_[A-Za-z0-9_-]{20,}\n$/);
      expect(result.stderr).toBe("✔ Token created\nWarning: Save this token now — it will not be shown again.\n\n");
      token = result.stdout.trim();
      tokenId = (await server.call("ListTokens", {})).body.tokens.find((t: any) => t.name === "ci token").id;
      expect((await run(["workers", "list"], { env: { ...env, NOTION_API_TOKEN: token } })).code).toBe(0);
    });

    it("create --plain, and --expires-in as typed", async () => {
      const plain = await run(["tokens", "create", "plain token", "--plain"]);
      expectOk(plain);
      expect(plain.stdout).toMatch(/^wy_[A-Za-z0-9_-]{20,}\n$/);
      expect(plain.stderr).toBe("");
      const month = await run(["tokens", "create", "month", "--expires-in", "30 days", "--plain"]);
      expectOk(month);
      const listed = (await server.call("ListTokens", {})).body.tokens.find((t: any) => t.name === "month");
      expect(Date.parse(listed.expiresAt) - Date.parse(listed.issuedAt)).toBe(30 * 86_400_000);
    });

    it("list parses our ListTokens (expiresAt always a string), table, --json, --plain", async () => {
      const { tokens } = (await server.call("ListTokens", {})).body;
      const rows = tokens.map((t: any) => [t.id, t.name, t.issuedAt, t.expiresAt, t.revokedAt ?? ""]);
      const table = await run(["tokens", "list"]);
      expectOk(table);
      expect(table.stdout).toBe(renderTable(["ID", "NAME", "ISSUED AT", "EXPIRES AT", "REVOKED AT"], rows));
      expect(normalise(table.stdout)).toContain(`<ID>  ${"ci token".padEnd(13)}<TIME>  ${"never".padEnd(26)}\n`);
      expect(normalise(table.stdout)).toContain(`<ID>  ${"month".padEnd(13)}<TIME>  <TIME>  \n`);
      const json = await run(["tokens", "ls", "--json"]);
      expectOk(json);
      expect(JSON.parse(json.stdout)).toEqual(
        tokens.map((t: any) => ({ id: t.id, name: t.name, issuedAt: t.issuedAt, expiresAt: t.expiresAt, revokedAt: t.revokedAt ?? null })),
      );
      expect((await run(["tokens", "list", "--plain"])).stdout).toBe(renderPlain(rows));
    });

    it("revoke needs --yes without a terminal; revoke --yes; the revoked token then gets exit 4", async () => {
      const refused = await run(["tokens", "revoke", tokenId]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toBe(CANNOT_CONFIRM);

      const result = await run(["tokens", "revoke", tokenId, "--yes"]);
      expectOk(result);
      expect(result.stderr).toBe("✔ Token revoked\n");
      const listed = JSON.parse((await run(["tokens", "list", "--json"])).stdout).find((t: any) => t.id === tokenId);
      expect(listed.revokedAt).toMatch(new RegExp(`^${ISO.source}$`));

      const denied = await run(["workers", "list"], { env: { ...env, NOTION_API_TOKEN: token } });
      expect(denied.code).toBe(4);
      expect(denied.stdout).toBe("");
      // Any 401 reads the same in the official CLI; ours prints the server's reason (ours.test.ts).
      expect(denied.stderr).toBe("error: Failed to list workers: unauthorized\n  hint: run `ntn login` to authenticate\n");
    });
  });

  describe("delete and errors", () => {
    it("delete needs --yes without a terminal; delete --yes deletes and leaves workers.json", async () => {
      const workerId = workerIdOf();
      const refused = await run(["workers", "delete"]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toBe(CANNOT_CONFIRM);

      const before = fs.readFileSync(path.join(project.dir, "workers.json"), "utf8");
      const result = await run(["workers", "delete", "--yes"]);
      expectOk(result);
      expect(result.stderr).toBe("✔ Worker deleted\n");
      expect((await server.call("GetWorker", { workerId })).status).toBe(404);
      expect(fs.readFileSync(path.join(project.dir, "workers.json"), "utf8")).toBe(before);

      const gone = await run(["workers", "env", "list"]);
      expect(gone.code).toBe(5);
      expect(gone.stderr).toBe(
        `error: Failed to list environment variables (404 Not Found worker_not_found): Worker "${workerId}" not found.\n`,
      );
    });

    it("another workspace's worker reads exactly like an unknown one", async () => {
      const { body } = await server.call("CreateWorker", { name: "mine", uploadType: "source" });
      const mine = body.worker.workerId as string;
      const { createWorkspace } = await import("../../packages/server/src/workspaces/service.js");
      const { createTokenService } = await import("../../packages/server/src/auth/tokens.js");
      const db = server.server.store.db;
      const other = await createWorkspace(db, createTokenService(db), "Other team");
      const otherEnv = { ...env, NOTION_API_TOKEN: other.token, NOTION_WORKSPACE_ID: other.workspace.id };
      const foreign = await run(["workers", "get", mine], { env: otherEnv });
      const unknown = await run(["workers", "get", "00000000-0000-4000-8000-000000000000"], { env: otherEnv });
      expect(foreign.code).toBe(5);
      expect(foreign.stderr.replace(mine, "<ID>")).toBe(unknown.stderr.replace("00000000-0000-4000-8000-000000000000", "<ID>"));
    });

    it("a server that is not running: exit 5", async () => {
      const port = await closedPort();
      const result = await run(["workers", "list"], { env: { ...env, NOTION_API_BASE_URL: `http://127.0.0.1:${port}` } });
      expect(result.code).toBe(5);
      // The official CLI names the URL only with -v; ours names it always (ours.test.ts).
      expect(result.stderr).toBe("error: Failed to list workers\n");
      const verbose = await run(["-v", "workers", "list"], { env: { ...env, NOTION_API_BASE_URL: `http://127.0.0.1:${port}` } });
      expect(verbose.stderr).toContain(`http://127.0.0.1:${port}/api/v3/workersListWorkers`);
    });
  });
});
