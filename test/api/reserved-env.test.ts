/**
 * Security review C4 (a secret named NODE_OPTIONS switched the permission model off) and M5 (a
 * value with a NUL byte): UpsertSecrets, on the official wire protocol, refuses names the worker's
 * runtime reads itself and values no environment variable can hold; what was stored before is kept
 * out of worker processes and out of PullEnv; our CLI shows the server's errors as they come.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { Readable } from "node:stream";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createContext, type CommandSpec } from "../../packages/cli/src/define-command.js";
import { isUserError } from "../../packages/cli/src/errors.js";
import { Output } from "../../packages/cli/src/output.js";
import pushCommand from "../../packages/cli/src/commands/workers/env/push.js";
import setCommand from "../../packages/cli/src/commands/workers/env/set.js";
import { createSecretService, filterWorkerEnv, reservedEnvName } from "../../packages/server/src/secrets/service.js";
import type { WorkerRow } from "../../packages/server/src/store/schema.js";
import { upsertSecret } from "../../packages/server/src/store/secrets.js";
import { Keyring } from "../../packages/server/src/vault/keyring.js";
import { aad, seal } from "../../packages/server/src/vault/seal.js";
import type { WorkerService } from "../../packages/server/src/workers/service.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { tempDir } from "../helpers/tmp.js";

let server: TestServer;
let workerId: string;
/** A recognisable value that must never show up in an answer or a log. */
const CANARY = `canary-${crypto.randomBytes(8).toString("hex")}`;

beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await server?.stop();
});
beforeEach(async () => {
  const created = await server.call("CreateWorker", { name: `reserved-${crypto.randomBytes(3).toString("hex")}` });
  expect(created.status).toBe(200);
  workerId = created.body.worker.workerId;
});

const upsert = (secrets: { key: string; value: string }[]) => server.call("UpsertSecrets", { workerId, secrets });
const storedNames = async () => ((await server.call("ListSecrets", { workerId })).body.secrets as { key: string }[]).map((s) => s.key);

describe("UpsertSecrets and reserved names", () => {
  it("refuses NODE_OPTIONS with the rule and why, and stores nothing of the request", async () => {
    const answer = await upsert([
      { key: "GOOD", value: "fine" },
      { key: "NODE_OPTIONS", value: "--no-experimental-permission" },
    ]);
    expect(answer.status).toBe(400);
    expect(answer.body).toMatchObject({
      object: "error",
      status: 400,
      code: "env_name_reserved",
      message: "NODE_OPTIONS is reserved: NODE_* variables configure the Node.js runtime that runs the worker.",
    });
    expect(answer.body.hint).toContain("APP_NODE_OPTIONS");
    expect(JSON.stringify(answer.body)).not.toContain("--no-experimental-permission");
    expect(await storedNames()).toEqual([]);
  });

  it.each([
    ["NODE_PATH", "NODE_*"],
    ["NODE_EXTRA_CA_CERTS", "NODE_*"],
    ["LD_PRELOAD", "LD_*"],
    ["LD_LIBRARY_PATH", "LD_*"],
    ["UV_THREADPOOL_SIZE", "UV_*"],
    ["npm_config_registry", "npm_*"],
    ["NPM_CONFIG_USERCONFIG", "npm_*"],
    ["Npm_Config_Cache", "npm_*"],
    ["WORKYARD_MASTER_KEY", "WORKYARD_*"],
    ["OPENSSL_CONF", "OPENSSL_*"],
    ["OPENSSL_MODULES", "OPENSSL_*"],
  ])("refuses %s (%s)", async (name, rule) => {
    const answer = await upsert([{ key: name, value: CANARY }]);
    expect(answer.status).toBe(400);
    expect(answer.body.code).toBe("env_name_reserved");
    expect(answer.body.message).toMatch(new RegExp(`^${name} is reserved: ${rule.replace("*", "\\*")} variables .+\\.$`));
    expect(JSON.stringify(answer.body)).not.toContain(CANARY);
    expect(await storedNames()).toEqual([]);
  });

  it("stores names that only look alike, and NODE_ENV (Node.js ignores it; workers set it)", async () => {
    const names = ["NODE_ENV", "NODEJS_VERSION", "MY_NODE_OPTIONS", "LDAP_URL", "UVX", "OPENSSL", "WORKYARDISH", "NPMRC"];
    const answer = await upsert(names.map((key) => ({ key, value: "x" })));
    expect(answer.status, JSON.stringify(answer.body)).toBe(200);
    expect(await storedNames()).toEqual([...names].sort());
  });

  it("still ignores (does not refuse) the runtime's OAuth token names, as the official env push sends them back", async () => {
    const token = "OAUTH_6769746875622D6F61757468_ACCESS_TOKEN";
    const answer = await upsert([
      { key: token, value: "pulled-token" },
      { key: "GITHUB_CLIENT_ID", value: "client" },
    ]);
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ updated: ["GITHUB_CLIENT_ID"], ignored: [token] });
    expect(await storedNames()).toEqual(["GITHUB_CLIENT_ID"]);
  });

  it("exports the rule as reservedEnvName", () => {
    expect(reservedEnvName("NODE_OPTIONS")).toBe("NODE_OPTIONS is reserved: NODE_* variables configure the Node.js runtime that runs the worker.");
    expect(reservedEnvName("npm_config_script_shell")).toMatch(/^npm_config_script_shell is reserved: npm_\*/);
    expect(reservedEnvName("NODE_ENV")).toBeUndefined();
    expect(reservedEnvName("GITHUB_CLIENT_ID")).toBeUndefined();
    expect(reservedEnvName("OAUTH_6769746875622D6F61757468_ACCESS_TOKEN")).toBeUndefined();
  });
});

describe("UpsertSecrets and NUL bytes (M5)", () => {
  it("refuses a value with a NUL byte, naming the variable, never echoing the value, storing nothing", async () => {
    const value = `${CANARY}\u0000${CANARY}-after-nul`;
    const answer = await upsert([
      { key: "FIRST", value: "fine" },
      { key: "WITH_NUL", value },
    ]);
    expect(answer.status).toBe(400);
    expect(answer.body).toMatchObject({
      code: "env_value_invalid",
      message: "The value of WITH_NUL contains a NUL byte, which no environment variable can hold.",
    });
    expect(JSON.stringify(answer.body)).not.toContain(CANARY);
    expect(server.logs()).not.toContain(CANARY);
    expect(await storedNames()).toEqual([]);
  });
});

describe("rows stored before the rules", () => {
  /** Writes a secret row as an older server would have, past today's checks. */
  function keyring(): Keyring {
    return Keyring.fromFile(path.join(server.dataDir, "master.key"));
  }
  async function storeRaw(name: string, value: string): Promise<void> {
    const sealed = seal(keyring(), value, aad.secret(server.workspaceId, workerId, name));
    await upsertSecret(server.server.store.db, {
      workspace_id: server.workspaceId,
      worker_id: workerId,
      name,
      key_id: sealed.keyId,
      sealed: sealed.sealed,
      created_at: Date.now(),
      updated_at: Date.now(),
    });
  }
  async function workerRow(): Promise<WorkerRow> {
    return server.server.store.db.selectFrom("workers").selectAll().where("id", "=", workerId).executeTakeFirstOrThrow();
  }

  it("are left out of what a worker process gets, and out of PullEnv with a notice that names them", async () => {
    await storeRaw("NODE_OPTIONS", `--require=/tmp/${CANARY}.js`);
    await storeRaw("LD_PRELOAD", `/tmp/${CANARY}.so`);
    await storeRaw("BROKEN", `${CANARY}\u0000tail`);
    await storeRaw("GREETING", "hello");
    await storeRaw("NODE_ENV", "development");

    const secrets = createSecretService({ db: server.server.store.db, changes: server.server.store.changes, keyring: keyring(), workers: {} as WorkerService });
    const runtime = await secrets.runtimeSecretsOf(await workerRow());
    expect(runtime).toEqual({ GREETING: "hello", NODE_ENV: "development" });
    // secretsOf still answers everything stored (to scrub values from logs), never for a process.
    expect(Object.keys(await secrets.secretsOf(await workerRow())).sort()).toEqual(["BROKEN", "GREETING", "LD_PRELOAD", "NODE_ENV", "NODE_OPTIONS"]);

    const pulled = await server.call("PullEnv", { workerId });
    expect(pulled.status).toBe(200);
    expect(pulled.body.env).toEqual(
      expect.arrayContaining([
        { key: "GREETING", value: "hello" },
        { key: "NODE_ENV", value: "development" },
      ]),
    );
    expect(pulled.body.env).toHaveLength(2);
    const notices = pulled.body.notices as { key: string; message: string }[];
    expect(notices.map((n) => n.key).sort()).toEqual(["BROKEN", "LD_PRELOAD", "NODE_OPTIONS"]);
    expect(notices.find((n) => n.key === "NODE_OPTIONS")!.message).toBe(
      "NODE_OPTIONS is reserved: NODE_* variables configure the Node.js runtime that runs the worker; it is stored but no run gets it. Remove it with: ntn workers env unset NODE_OPTIONS",
    );
    expect(JSON.stringify(pulled.body.notices)).not.toContain(CANARY);
    // Still listed (names only), so they can be seen and removed.
    expect(await storedNames()).toEqual(["BROKEN", "GREETING", "LD_PRELOAD", "NODE_ENV", "NODE_OPTIONS"]);
    expect((await server.call("DeleteSecret", { workerId, key: "NODE_OPTIONS" })).status).toBe(200);
  });

  it("filterWorkerEnv drops reserved names and NUL values from a process environment, keeping the runtime's token variables", () => {
    expect(
      filterWorkerEnv({
        A: "1",
        NODE_OPTIONS: "x",
        npm_config_registry: "x",
        OAUTH_41_ACCESS_TOKEN: "fresh",
        NUL: "a\u0000b",
        NODE_ENV: "test",
      }),
    ).toEqual({ A: "1", OAUTH_41_ACCESS_TOKEN: "fresh", NODE_ENV: "test" });
  });

  it("runtimeSecretsOf also leaves out a stored OAuth token name (the runtime sets a fresh one)", async () => {
    await storeRaw("OAUTH_41_ACCESS_TOKEN", "stale");
    await storeRaw("KEPT", "yes");
    const secrets = createSecretService({ db: server.server.store.db, changes: server.server.store.changes, keyring: keyring(), workers: {} as WorkerService });
    expect(await secrets.runtimeSecretsOf(await workerRow())).toEqual({ KEPT: "yes" });
    const pulled = await server.call("PullEnv", { workerId });
    expect(pulled.body.env).toEqual([{ key: "KEPT", value: "yes" }]);
    expect(pulled.body.notices).toEqual([]);
  });
});

describe("our CLI shows the server's errors as it sends them", () => {
  let tmp: { dir: string; cleanup(): void };
  beforeAll(() => {
    tmp = tempDir("wy-reserved-cli-");
  });
  afterAll(() => tmp?.cleanup());

  /** One command in this process, its error rendered as main.ts renders it. */
  async function cli(command: CommandSpec, args: Record<string, string | string[] | undefined>, opts: Record<string, unknown>) {
    let stdout = "";
    let stderr = "";
    const out = new Output({ write: (t: string) => (stdout += t) }, { write: (t: string) => (stderr += t) }, { verbose: false });
    const home = path.join(tmp.dir, "home");
    const env = {
      HOME: home,
      XDG_CONFIG_HOME: path.join(home, ".config"),
      NOTION_HOME: path.join(home, ".notion"),
      NOTION_KEYRING: "0",
      NOTION_API_BASE_URL: server.url,
      NOTION_API_TOKEN: server.adminToken,
      NOTION_WORKSPACE_ID: server.workspaceId,
    };
    let code = 0;
    try {
      await command.run(
        createContext({ args, opts, out, env, cwd: tmp.dir, stdin: Readable.from([]), globals: { verbose: false, workersConfigFile: undefined } }),
      );
    } catch (error) {
      out.error(error);
      code = isUserError(error) ? error.exitCode : 5;
    }
    return { code, stdout, stderr };
  }

  it("env set NODE_OPTIONS=...: the server's message and hint, exit 5", async () => {
    const result = await cli(setCommand, { VARS: [`NODE_OPTIONS=${CANARY}`] }, { workerId });
    expect(result.code).toBe(5);
    expect(result.stdout).toBe("");
    expect(result.stderr).toBe(
      "error: NODE_OPTIONS is reserved: NODE_* variables configure the Node.js runtime that runs the worker.\n" +
        "  hint: Give the value another name (e.g. APP_NODE_OPTIONS) and read that name in the worker.\n",
    );
  });

  it("env set with a NUL byte: names the variable, never shows the value", async () => {
    const result = await cli(setCommand, { VARS: [`TOKEN=${CANARY}\u0000x`] }, { workerId });
    expect(result.code).toBe(5);
    expect(result.stderr).toContain("error: The value of TOKEN contains a NUL byte, which no environment variable can hold.\n");
    expect(result.stderr).not.toContain(CANARY);
  });

  it("env push of a .env holding LD_PRELOAD: the server's error, nothing stored", async () => {
    const file = path.join(tmp.dir, `push-${workerId}.env`);
    fs.writeFileSync(file, `GOOD=1\nLD_PRELOAD=/tmp/${CANARY}.so\n`);
    const result = await cli(pushCommand, { WORKER_ID: workerId }, { file, yes: true });
    expect(result.code).toBe(5);
    expect(result.stderr).toContain("error: LD_PRELOAD is reserved: LD_* variables configure the dynamic linker that loads the worker's runtime.\n");
    expect(result.stderr).not.toContain(CANARY);
    expect(await storedNames()).toEqual([]);
  });
});
