import { describe, expect, it } from "vitest";
import { localChangeFeed, type Change, type ChangeFeed } from "./changes.js";
import { ReadCache } from "./read-cache.js";

interface Row {
  id: string;
  value: string;
}

/** A feed whose liveness the test sets (PostgreSQL's listening connection up or down). */
function feed(): ChangeFeed & { publish(...changes: Change[]): void; setLive(live: boolean): void } {
  const inner = localChangeFeed();
  let live = true;
  return {
    transaction: (db, write) => inner.transaction(db, write),
    publish: (...changes: Change[]) => inner.publish(...changes),
    onChange: (listener) => inner.onChange(listener),
    onListenerError: (report) => inner.onListenerError(report),
    get live() {
      return live;
    },
    setLive: (next: boolean) => {
      live = next;
    },
    close: () => inner.close(),
  };
}

/** A loader over a mutable table that counts its reads. */
function table(rows: Record<string, Row>) {
  const state = { reads: 0 };
  return {
    state,
    load: (key: string) => async () => {
      state.reads += 1;
      return rows[key] ? { ...rows[key]! } : undefined;
    },
  };
}

describe("ReadCache", () => {
  it("serves a row from memory until a change names it, then reads it again", async () => {
    const changes = feed();
    const rows = { a: { id: "a", value: "1" }, b: { id: "b", value: "1" } };
    const db = table(rows);
    const cache = new ReadCache<Row>(changes, "workers", (row) => row.id);
    expect(await cache.get("a", db.load("a"))).toEqual({ id: "a", value: "1" });
    expect(await cache.get("b", db.load("b"))).toEqual({ id: "b", value: "1" });
    expect(await cache.get("a", db.load("a"))).toEqual({ id: "a", value: "1" });
    expect(db.state.reads).toBe(2);

    rows.a.value = "2";
    await changes.publish({ table: "workers", id: "a" });
    expect(await cache.get("a", db.load("a"))).toEqual({ id: "a", value: "2" });
    // b was not named: still from memory. A change of another table is not this cache's.
    await changes.publish({ table: "deployments" });
    expect(await cache.get("b", db.load("b"))).toEqual({ id: "b", value: "1" });
    expect(db.state.reads).toBe(3);
    // A change of the whole table drops everything.
    await changes.publish({ table: "workers" });
    await cache.get("b", db.load("b"));
    expect(db.state.reads).toBe(4);
  });

  it("matches a change by the row's id even where the key is another column (a token's hash)", async () => {
    const changes = feed();
    const db = table({ hash1: { id: "token-1", value: "live" } });
    const cache = new ReadCache<Row>(changes, "api_tokens", (row) => row.id);
    await cache.get("hash1", db.load("hash1"));
    await changes.publish({ table: "api_tokens", id: "token-1" });
    expect(cache.size).toBe(0);
  });

  it("keeps nothing a change overtook while it was being read", async () => {
    const changes = feed();
    const rows = { a: { id: "a", value: "old" } };
    const cache = new ReadCache<Row>(changes, "workers", (row) => row.id);
    let reads = 0;
    // The read sees the old row; the write commits and is published before the read returns.
    const first = await cache.get("a", async () => {
      reads += 1;
      const seen = { ...rows.a };
      rows.a.value = "new";
      await changes.publish({ table: "workers", id: "a" });
      return seen;
    });
    expect(first?.value).toBe("old");
    expect(cache.size).toBe(0);
    expect((await cache.get("a", async () => (reads++, { ...rows.a })))?.value).toBe("new");
    expect(reads).toBe(2);
  });

  it("neither serves nor keeps anything while the feed is not live, nor keeps absent rows", async () => {
    const changes = feed();
    const db = table({ a: { id: "a", value: "1" } });
    const cache = new ReadCache<Row>(changes, "workers", (row) => row.id);
    await cache.get("a", db.load("a"));
    changes.setLive(false);
    await cache.get("a", db.load("a"));
    await cache.get("a", db.load("a"));
    expect(db.state.reads).toBe(3);
    changes.setLive(true);
    expect(await cache.get("missing", db.load("missing"))).toBeUndefined();
    expect(await cache.get("missing", db.load("missing"))).toBeUndefined();
    expect(db.state.reads).toBe(5);
  });

  it("reads a row again after its time to live, and holds at most `max` rows", async () => {
    const changes = feed();
    let now = 1_000;
    const db = table({ a: { id: "a", value: "1" }, b: { id: "b", value: "1" }, c: { id: "c", value: "1" } });
    const cache = new ReadCache<Row>(changes, "workers", (row) => row.id, { ttlMs: 100, max: 2, now: () => now });
    await cache.get("a", db.load("a"));
    now += 50;
    await cache.get("a", db.load("a"));
    expect(db.state.reads).toBe(1);
    now += 60;
    await cache.get("a", db.load("a"));
    expect(db.state.reads).toBe(2);
    await cache.get("b", db.load("b"));
    await cache.get("c", db.load("c"));
    expect(cache.size).toBe(2);
  });
});
