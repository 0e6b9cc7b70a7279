import type { Kysely } from "kysely";
import { sql } from "kysely";
import type { Database } from "./schema.js";

/** A write to a table that hot paths read from memory: one row (`id`) or all of them. */
export interface Change {
  table: "api_tokens" | "workers" | "deployments";
  id?: string;
  /** The row was deleted (a worker's processes stop on every server process). */
  gone?: true;
}

/**
 * How every server process on a database learns that rows it may hold in memory changed
 * (read-cache.ts). A writer publishes once its write committed: this process hears it at once,
 * before publish returns; other processes of a PostgreSQL cluster within moments, through
 * LISTEN/NOTIFY. With SQLite there is one server process, and the feed is local.
 */
export interface ChangeFeed {
  publish(...changes: Change[]): Promise<void>;
  onChange(listener: (change: Change) => void): void;
  /**
   * Whether this process hears what others publish right now. While it does not (the listening
   * connection is down), nothing may be served from memory: a change could pass unheard.
   */
  readonly live: boolean;
  close(): Promise<void>;
}

/** The PostgreSQL channel (database-wide: processes on other schemas only see extra invalidations). */
export const CHANGES_CHANNEL = "workyard_changes";

/** NOTIFY payloads are limited to 8000 bytes: more ids than fit go as whole-table changes. */
const MAX_PAYLOAD = 7000;

class Listeners {
  private readonly listeners: ((change: Change) => void)[] = [];
  add(listener: (change: Change) => void): void {
    this.listeners.push(listener);
  }
  emit(change: Change): void {
    for (const listener of this.listeners) listener(change);
  }
}

/** One process, one database file: changes are heard where they are made. */
export function localChangeFeed(): ChangeFeed {
  const listeners = new Listeners();
  return {
    async publish(...changes) {
      for (const change of changes) listeners.emit(change);
    },
    onChange: (listener) => listeners.add(listener),
    live: true,
    close: async () => {},
  };
}

/**
 * LISTEN on a connection of its own, reconnected after a loss; NOTIFY through the pool. A lost
 * connection may have missed notifications: the feed then says everything changed, is not live
 * until it listens again, and says everything changed once more when it does.
 */
export async function postgresChangeFeed(url: string, db: Kysely<Database>, options: { reconnectMs?: number } = {}): Promise<ChangeFeed> {
  const pg = (await import("pg")).default;
  const listeners = new Listeners();
  const reconnectMs = options.reconnectMs ?? 1000;
  let live = false;
  let closed = false;
  let client: import("pg").Client | undefined;
  let retry: NodeJS.Timeout | undefined;

  const lost = () => {
    if (!live && client === undefined) return;
    live = false;
    client = undefined;
    listeners.emit({ table: "api_tokens" });
    listeners.emit({ table: "workers" });
    listeners.emit({ table: "deployments" });
    if (!closed) retry = setTimeout(() => void listen(), reconnectMs);
  };

  async function listen(): Promise<void> {
    // Named, so an operator (or a test) can tell which server process listens on which connection.
    const next = new pg.Client({ connectionString: url, application_name: `workyard-changes-${process.pid}` });
    next.on("error", () => {
      if (client === next) lost();
    });
    next.on("end", () => {
      if (client === next) lost();
    });
    next.on("notification", (message) => {
      if (message.channel !== CHANGES_CHANNEL || !message.payload) return;
      try {
        for (const change of JSON.parse(message.payload) as Change[]) listeners.emit(change);
      } catch {
        // not ours
      }
    });
    try {
      await next.connect();
      await next.query(`LISTEN ${CHANGES_CHANNEL}`);
    } catch {
      await next.end().catch(() => {});
      if (!closed) retry = setTimeout(() => void listen(), reconnectMs);
      return;
    }
    if (closed) {
      await next.end().catch(() => {});
      return;
    }
    client = next;
    // What was cached while no one listened is dropped: it may have changed unheard.
    for (const table of ["api_tokens", "workers", "deployments"] as const) listeners.emit({ table });
    live = true;
  }

  await listen();
  return {
    async publish(...changes) {
      for (const change of changes) listeners.emit(change);
      let payload = JSON.stringify(changes);
      if (payload.length > MAX_PAYLOAD) payload = JSON.stringify([...new Set(changes.map((c) => c.table))].map((table) => ({ table })));
      await sql`select pg_notify(${CHANGES_CHANNEL}, ${payload})`.execute(db);
    },
    onChange: (listener) => listeners.add(listener),
    get live() {
      return live;
    },
    async close() {
      closed = true;
      clearTimeout(retry);
      live = false;
      const current = client;
      client = undefined;
      await current?.end().catch(() => {});
    },
  };
}
