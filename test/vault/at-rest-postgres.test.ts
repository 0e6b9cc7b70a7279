import crypto from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rotateMasterKey } from "../../packages/server/src/main.js";
import { DIALECTS } from "../helpers/dialects.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";

/**
 * Secrets at rest on PostgreSQL: the `sealed` bytea column and a dump of every table of the
 * fresh schema hold no canary value, as text or as the hex PostgreSQL prints bytea in.
 * Skipped without PostgreSQL at 127.0.0.1:5432, except under CI=true (DIALECTS throws there).
 */
describe.skipIf(!DIALECTS.includes("postgres"))("secrets at rest on PostgreSQL", () => {
  let server: TestServer;
  let client: pg.Client;
  let schema: string;
  let workerId: string;
  const tag = crypto.randomBytes(6).toString("hex");
  const values: Record<string, string> = {
    CANARY_PLAIN: `wy-canary-${tag}-plain`,
    CANARY_SPACES: `wy-canary-${tag} with spaces and "quotes"`,
    CANARY_UNICODE: `wy-canary-${tag}-ünïcødé-✓`,
    CANARY_LONG: `wy-canary-${tag}-long-`.repeat(600),
  };
  /** Forms a canary could take in a dump: as is, and as hex (bytea's text output). */
  const forms = [`wy-canary-${tag}`, Buffer.from(`wy-canary-${tag}`).toString("hex")];

  beforeAll(async () => {
    server = await startTestServer({ dialect: "postgres" });
    const url = server.server.config.databaseUrl!;
    // The helper's URL sets search_path to the fresh schema: queries below see only this run's tables.
    client = new pg.Client({ connectionString: url });
    await client.connect();
    schema = (await client.query("select current_schema() as s")).rows[0].s;
    expect(schema).toMatch(/^wy_test_/);

    const created = await server.call("CreateWorker", { name: "at-rest-pg", uploadType: "source" });
    expect(created.status).toBe(200);
    workerId = created.body.worker.workerId;
    const set = await server.call("UpsertSecrets", { workerId, secrets: Object.entries(values).map(([key, value]) => ({ key, value })) });
    expect(set.status).toBe(200);
  });

  afterAll(async () => {
    await client?.end();
    await server?.stop();
  });

  it("keeps the sealed column free of every canary", async () => {
    const rows = (await client.query("select name, key_id, sealed from secrets where worker_id = $1 order by name", [workerId])).rows as {
      name: string;
      key_id: string;
      sealed: Buffer;
    }[];
    expect(rows.map((r) => r.name)).toEqual(Object.keys(values).sort());
    for (const row of rows) {
      expect(Buffer.isBuffer(row.sealed)).toBe(true);
      // nonce (12) + ciphertext + tag (16): at least as long as the value, never equal to it.
      expect(row.sealed.length).toBe(12 + Buffer.byteLength(values[row.name]!) + 16);
      expect(row.sealed.includes(Buffer.from(`wy-canary-${tag}`))).toBe(false);
    }
  });

  it("keeps a dump of every table free of every canary", async () => {
    const tables = (
      await client.query("select table_name from information_schema.tables where table_schema = $1 and table_type = 'BASE TABLE'", [schema])
    ).rows.map((r: { table_name: string }) => r.table_name);
    expect(tables).toContain("secrets");
    let dump = "";
    for (const table of tables) {
      const rows = (await client.query(`select t::text as row from ${client.escapeIdentifier(table)} t`)).rows as { row: string }[];
      dump += rows.map((r) => r.row).join("\n") + "\n";
    }
    // The names are in clear: the dump did reach the secret rows.
    expect(dump).toContain("CANARY_UNICODE");
    for (const form of forms) expect(dump).not.toContain(form);

    const secrets = (await client.query("select * from secrets")).rows;
    const json = JSON.stringify(secrets, (_k, v) => (v && v.type === "Buffer" ? Buffer.from(v.data).toString("latin1") : v));
    expect(json).toContain("CANARY_PLAIN");
    for (const form of forms) expect(json).not.toContain(form);
  });

  it("keeps canaries out of the server's logs", () => {
    for (const form of forms) expect(server.logs()).not.toContain(form);
  });

  it("rotates the key under every row and still serves the values", async () => {
    const before = (await client.query("select distinct key_id from secrets")).rows.map((r: { key_id: string }) => r.key_id);
    expect(before).toHaveLength(1);
    const report = await rotateMasterKey({ dataDir: server.dataDir, env: { DATABASE_URL: server.server.config.databaseUrl } });
    expect(report.resealed.secrets).toBe(Object.keys(values).length);
    expect(report.keyId).not.toBe(before[0]);
    const after = (await client.query("select distinct key_id from secrets")).rows.map((r: { key_id: string }) => r.key_id);
    expect(after).toEqual([report.keyId]);

    const pulled = await server.call("PullEnv", { workerId });
    expect(Object.fromEntries(pulled.body.env.map((e: { key: string; value: string }) => [e.key, e.value]))).toEqual(values);
    const sealed = (await client.query("select sealed from secrets")).rows as { sealed: Buffer }[];
    for (const row of sealed) expect(row.sealed.includes(Buffer.from(`wy-canary-${tag}`))).toBe(false);
  });
});
