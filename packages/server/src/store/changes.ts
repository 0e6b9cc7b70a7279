import type { Kysely, Transaction } from "kysely";
import { sql } from "kysely";
import type { Database } from "./schema.js";

/** A write to a table that hot paths read from memory: one row (`id`) or all of them. */
export interface Change {
  table: "api_tokens" | "workers" | "deployments" | "oauth_connections" | "webhooks";
  /** The row's id; for webhooks, the worker's (a change drops all of the worker's webhooks). */
  id?: string;
  /** The row was deleted (a worker's processes stop on every server process). */
  gone?: true;
}

/** What a write inside `ChangeFeed.transaction` calls for each row it changes. */
export type Publish = (...changes: Change[]) => void;

/**
 * How every server process on a database learns that rows it may hold in memory changed
 * (read-cache.ts). A write publishes its changes inside its own transaction: other processes of a
 * PostgreSQL cluster hear them through NOTIFY, which PostgreSQL delivers with the commit and only
 * if it commits, so a committed write is never left unannounced (and a failed announcement fails
 * the write); this process hears them once the commit returned, before `transaction` does. With
 * SQLite there is one server process, and the feed is local.
 */
export interface ChangeFeed {
  transaction<T>(db: Kysely<Database>, write: (trx: Transaction<Database>, publish: Publish) => Promise<T>): Promise<T>;
  onChange(listener: (change: Change) => void): void;
  /** Where a listener's failure is reported (a listener's bug must not stop the others, nor the write). */
  onListenerError(report: (error: unknown) => void): void;
  /**
   * Whether this process hears what others publish right now. While it does not (the listening
   * connection is down), nothing may be served from memory: a change could pass unheard.
   */
  readonly live: boolean;
  close(): Promise<void>;
}

/** The PostgreSQL channel (database-wide: processes on other schemas only see extra invalidations). */
export const CHANGES_CHANNEL = "workyard_changes";

/** NOTIFY payloads are limited to 8000 bytes: more changes go as several notifications. */
const MAX_PAYLOAD = 7000;

const TABLES = ["api_tokens", "workers", "deployments", "oauth_connections", "webhooks"] as const;

class Listeners {
  private readonly listeners: ((change: Change) => void)[] = [];
  private reporters: ((error: unknown) => void)[] = [];
  add(listener: (change: Change) => void): void {
    this.listeners.push(listener);
  }
  onError(report: (error: unknown) => void): void {
    this.reporters.push(report);
  }
  emit(...changes: Change[]): void {
    for (const change of changes) {
      for (const listener of this.listeners) {
        try {
          listener(change);
        } catch (error) {
          if (this.reporters.length === 0) console.error("A change listener failed:", error);
          for (const report of this.reporters) report(error);
        }
      }
    }
  }
  /** Everything may have changed (a lost listening connection). */
  emitAll(): void {
    this.emit(...TABLES.map((table) => ({ table })));
  }
}

/** The changes as NOTIFY payloads, each within PostgreSQL's limit. */
export function notificationPayloads(changes: Change[]): string[] {
  const payloads: string[] = [];
  let batch: string[] = [];
  let size = 2;
  for (const change of changes) {
    const text = JSON.stringify(change);
    if (batch.length > 0 && size + text.length + 1 > MAX_PAYLOAD) {
      payloads.push(`[${batch.join(",")}]`);
      batch = [];
      size = 2;
    }
    batch.push(text);
    size += text.length + 1;
  }
  if (batch.length > 0) payloads.push(`[${batch.join(",")}]`);
  return payloads;
}

/**
 * The part both feeds share: the write and its announcement in one transaction, then this
 * process's listeners once committed.
 */
function transactionWith(listeners: Listeners, announce: (trx: Transaction<Database>, changes: Change[]) => Promise<void>): ChangeFeed["transaction"] {
  return async (db, write) => {
    const published: Change[] = [];
    const result = await db.transaction().execute(async (trx) => {
      const out = await write(trx, (...changes) => void published.push(...changes));
      if (published.length > 0) await announce(trx, published);
      return out;
    });
    listeners.emit(...published);
    return result;
  };
}

/** One process, one database file: changes are heard where they are made. */
export function localChangeFeed(): ChangeFeed & { publish(...changes: Change[]): void } {
  const listeners = new Listeners();
  return {
    transaction: transactionWith(listeners, async () => {}),
    /** Heard at once, no write needed (tests). */
    publish: (...changes) => listeners.emit(...changes),
    onChange: (listener) => listeners.add(listener),
    onListenerError: (report) => listeners.onError(report),
    live: true,
    close: async () => {},
  };
}

export interface PostgresChangeFeedOptions {
  /** Wait before listening again after a loss. */
  reconnectMs?: number;
  /**
   * How often the listening connection is checked: a connection that died without a word (a
   * network partition, a host gone) would otherwise look live while hearing nothing.
   */
  heartbeatMs?: number;
}

/**
 * LISTEN on a connection of its own, reconnected after a loss; NOTIFY inside the writes. A lost
 * connection may have missed notifications: the feed then says everything changed, is not live
 * until it listens again, and says everything changed once more when it does.
 */
export async function postgresChangeFeed(url: string, options: PostgresChangeFeedOptions = {}): Promise<ChangeFeed> {
  const pg = (await import("pg")).default;
  const listeners = new Listeners();
  const reconnectMs = options.reconnectMs ?? 1000;
  const heartbeatMs = options.heartbeatMs ?? 5000;
  let live = false;
  let closed = false;
  let client: import("pg").Client | undefined;
  let retry: NodeJS.Timeout | undefined;
  let heartbeat: NodeJS.Timeout | undefined;

  const lost = (which: import("pg").Client) => {
    if (client !== which) return;
    live = false;
    client = undefined;
    clearInterval(heartbeat);
    // It may still be open (a heartbeat that got no answer): it must not be taken for live again.
    which.end().catch(() => {});
    listeners.emitAll();
    if (!closed) retry = setTimeout(() => void listen(), reconnectMs);
  };

  async function listen(): Promise<void> {
    // Named, so an operator (or a test) can tell which server process listens on which connection.
    const next = new pg.Client({
      connectionString: url,
      application_name: `workyard-changes-${process.pid}`,
      keepAlive: true,
      keepAliveInitialDelayMillis: heartbeatMs,
      // A host that went silent fails the attempt (or the heartbeat) instead of holding it forever.
      connectionTimeoutMillis: heartbeatMs,
      query_timeout: heartbeatMs,
    });
    next.on("error", () => lost(next));
    next.on("end", () => lost(next));
    next.on("notification", (message) => {
      if (message.channel !== CHANGES_CHANNEL || !message.payload) return;
      let changes: Change[];
      try {
        changes = JSON.parse(message.payload) as Change[];
      } catch {
        return; // not ours
      }
      listeners.emit(...changes);
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
    listeners.emitAll();
    live = true;
    heartbeat = setInterval(() => {
      next.query("select 1").catch(() => lost(next));
    }, heartbeatMs);
    heartbeat.unref();
  }

  await listen();
  return {
    transaction: transactionWith(listeners, async (trx, changes) => {
      for (const payload of notificationPayloads(changes)) await sql`select pg_notify(${CHANGES_CHANNEL}, ${payload})`.execute(trx);
    }),
    onChange: (listener) => listeners.add(listener),
    onListenerError: (report) => listeners.onError(report),
    get live() {
      return live;
    },
    async close() {
      closed = true;
      clearTimeout(retry);
      clearInterval(heartbeat);
      live = false;
      const current = client;
      client = undefined;
      await current?.end().catch(() => {});
    },
  };
}
