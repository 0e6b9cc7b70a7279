/**
 * The change feed on PostgreSQL (store/changes.ts), two feeds as two server processes would have
 * them: a write's changes go out with its commit and only with it, however many there are, and a
 * listening connection that dies without a word (no FIN, no RST: a partition) is noticed, so the
 * process stops serving from memory until it listens again.
 */
import net from "node:net";
import type { AddressInfo } from "node:net";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { localChangeFeed, postgresChangeFeed, type Change, type ChangeFeed } from "../../packages/server/src/store/changes.js";
import { openStore, type Store } from "../../packages/server/src/store/db.js";
import { until } from "../helpers/cluster.js";
import { DIALECTS } from "../helpers/dialects.js";
import { freshSchema } from "../helpers/pg.js";

/** Waits until `check` holds, up to `ms`. */

/** A TCP proxy to PostgreSQL that can stop forwarding without closing anything. */
async function freezableProxy(target: URL) {
  const sockets = new Set<net.Socket>();
  let frozen = false;
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port || 5432), target.hostname);
    sockets.add(client).add(upstream);
    client.on("data", (chunk) => void (frozen || upstream.write(chunk)));
    upstream.on("data", (chunk) => void (frozen || client.write(chunk)));
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", close).on("close", close);
    upstream.on("error", close).on("close", close);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    freeze: () => void (frozen = true),
    thaw: () => void (frozen = false),
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

describe.skipIf(!DIALECTS.includes("postgres"))("the change feed on PostgreSQL", () => {
  let schema: Awaited<ReturnType<typeof freshSchema>>;
  let writer: Store;
  let other: ChangeFeed;
  const heard: Change[] = [];

  beforeAll(async () => {
    schema = await freshSchema();
    writer = await openStore({ dataDir: "/nonexistent", databaseUrl: schema.url });
    other = await postgresChangeFeed(schema.url);
    other.onChange((change) => heard.push(change));
    await sql`create table items (id text primary key)`.execute(writer.db);
  });
  afterAll(async () => {
    await other?.close();
    await writer?.close();
    await schema?.drop();
  });

  it("announces a write's changes with its commit, and never those of a write that rolled back", async () => {
    const failed = writer.changes.transaction(writer.db, async (trx, publish) => {
      await sql`insert into items values ('rolled-back')`.execute(trx);
      publish({ table: "workers", id: "rolled-back" });
      throw new Error("the write fails after publishing");
    });
    await expect(failed).rejects.toThrow("the write fails after publishing");
    await writer.changes.transaction(writer.db, async (trx, publish) => {
      await sql`insert into items values ('committed')`.execute(trx);
      publish({ table: "workers", id: "committed" });
    });
    // Notifications arrive in commit order: had the rolled-back one gone out, it would be first.
    await until("the committed change", () => heard.some((c) => c.id === "committed"), 2000);
    expect(heard.map((c) => c.id)).not.toContain("rolled-back");
    const rows = await sql<{ id: string }>`select id from items order by id`.execute(writer.db);
    expect(rows.rows.map((r) => r.id)).toEqual(["committed"]);
  });

  it("a failed announcement fails the write with it", async () => {
    const failed = writer.changes.transaction(writer.db, async (trx, publish) => {
      await sql`insert into items values ('unannounced')`.execute(trx);
      // No payload of PostgreSQL's takes this (over its 8000 bytes): the NOTIFY fails.
      publish({ table: "workers", id: "x".repeat(9000) });
    });
    await expect(failed).rejects.toThrow();
    const rows = await sql<{ id: string }>`select id from items where id = 'unannounced'`.execute(writer.db);
    expect(rows.rows).toEqual([]);
  });

  it("sends many changes as several notifications, each one whole (ids and deletions kept)", async () => {
    const changes: Change[] = Array.from({ length: 400 }, (_, i) => ({ table: "workers", id: `many-${String(i).padStart(40, "0")}`, gone: true }));
    await writer.changes.transaction(writer.db, async (_trx, publish) => publish(...changes));
    await until("400 changes", () => heard.filter((c) => c.id?.startsWith("many-")).length === 400, 2000);
    expect(heard.filter((c) => c.id?.startsWith("many-"))).toEqual(changes);
  });

  it("notices a listening connection that went silent, stops serving from memory, and listens again", async () => {
    const proxy = await freezableProxy(new URL(schema.url));
    const through = new URL(schema.url);
    through.host = `127.0.0.1:${proxy.port}`;
    const feed = await postgresChangeFeed(through.toString(), { heartbeatMs: 200, reconnectMs: 100 });
    const tables: string[] = [];
    feed.onChange((change) => void (change.id === undefined && tables.push(change.table)));
    try {
      expect(feed.live).toBe(true);
      proxy.freeze();
      await until("the feed to notice", () => !feed.live, 2000);
      // Everything kept may have changed unheard: each table is dropped.
      expect(tables).toEqual(expect.arrayContaining(["api_tokens", "workers", "deployments"]));
      // Attempts to listen again meet the same silence for a while, and give up in time.
      await new Promise((resolve) => setTimeout(resolve, 600));
      expect(feed.live).toBe(false);
      proxy.thaw();
      await until("the feed to listen again", () => feed.live, 3000);
    } finally {
      await feed.close();
      await proxy.close();
    }
  });
});

describe("a change listener that throws", () => {
  it("neither stops the other listeners nor the write, and is reported", () => {
    const feed = localChangeFeed();
    const reached: string[] = [];
    const reported: unknown[] = [];
    feed.onListenerError((error) => reported.push(error));
    feed.onChange(() => {
      throw new Error("a listener's bug");
    });
    feed.onChange((change) => void reached.push(change.id!));
    feed.publish({ table: "workers", id: "a" }, { table: "workers", id: "b" });
    expect(reached).toEqual(["a", "b"]);
    expect(reported.map((e) => (e as Error).message)).toEqual(["a listener's bug", "a listener's bug"]);
  });
});
