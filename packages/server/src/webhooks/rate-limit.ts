/**
 * Requests per minute per key (a worker, a workspace), as a token bucket: up to `perMinute` at
 * once, refilled evenly over the minute. In memory, per server process: each process of a cluster
 * enforces the limit on what it receives.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly perMinute: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Takes one request's token: 0 when allowed, else the seconds until one is free. */
  take(key: string): number {
    const at = this.now();
    const rate = this.perMinute / 60_000;
    const bucket = this.buckets.get(key) ?? { tokens: this.perMinute, at };
    bucket.tokens = Math.min(this.perMinute, bucket.tokens + (at - bucket.at) * rate);
    bucket.at = at;
    this.buckets.set(key, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    // Full buckets are dropped now and then, so idle keys do not pile up.
    if (this.buckets.size > 10_000) for (const [k, b] of this.buckets) if (b.tokens >= this.perMinute) this.buckets.delete(k);
    return Math.max(1, Math.ceil((1 - bucket.tokens) / rate / 1000));
  }

  /** Gives back a token taken for a request refused for another reason (the other limit). */
  giveBack(key: string): void {
    const bucket = this.buckets.get(key);
    if (bucket) bucket.tokens = Math.min(this.perMinute, bucket.tokens + 1);
  }
}
