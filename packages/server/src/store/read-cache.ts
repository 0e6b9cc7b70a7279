import type { Change, ChangeFeed } from "./changes.js";

/**
 * Rows that hot paths read on every request (the API token, the worker, its live deployment),
 * kept in memory while the change feed says nothing about them, so a warm request costs no
 * database read. Correct across processes because every write of these rows publishes a change
 * (changes.ts) once committed:
 * - a change drops the row (or the whole table) at once in this process, within moments in others;
 * - a read that was under way while a change came in is not kept (it may hold the old row);
 * - nothing is kept or served while the feed is not live (a change could pass unheard);
 * - absent rows are never kept, and every entry is read again after `ttlMs` at the latest.
 */
export class ReadCache<V> {
  private readonly entries = new Map<string, { value: V; at: number }>();
  /** Bumped by every change to the table: a read that saw it move keeps nothing. */
  private epoch = 0;

  constructor(
    private readonly feed: ChangeFeed,
    private readonly table: Change["table"],
    /** The row id a change names, for an entry (its key may be another column, a hash say). */
    private readonly idOf: (value: V) => string,
    private readonly options: { max?: number; ttlMs?: number; now?: () => number } = {},
  ) {
    feed.onChange((change) => {
      if (change.table !== table) return;
      this.epoch += 1;
      if (change.id === undefined) return this.entries.clear();
      for (const [key, entry] of this.entries) if (this.idOf(entry.value) === change.id) this.entries.delete(key);
    });
  }

  async get(key: string, load: () => Promise<V | undefined>): Promise<V | undefined> {
    const now = (this.options.now ?? Date.now)();
    if (this.feed.live) {
      const hit = this.entries.get(key);
      if (hit && now - hit.at < (this.options.ttlMs ?? 30_000)) return hit.value;
    }
    const epoch = this.epoch;
    const value = await load();
    if (value !== undefined && this.feed.live && epoch === this.epoch) {
      if (this.entries.size >= (this.options.max ?? 10_000)) this.entries.delete(this.entries.keys().next().value!);
      this.entries.set(key, { value, at: now });
    }
    return value;
  }

  /** Drops one entry: what it held turned out unusable (sealed under a key this process no longer has). */
  forget(key: string): void {
    this.epoch += 1;
    this.entries.delete(key);
  }

  /** How many rows it holds (for tests and benches). */
  get size(): number {
    return this.entries.size;
  }
}
