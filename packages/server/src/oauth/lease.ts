import type { Kysely } from "kysely";
import { randomToken } from "../ids.js";
import * as oauthStore from "../store/oauth.js";
import type { Database, OauthConnectionRow } from "../store/schema.js";
import { connectedRow, refreshBusy } from "./errors.js";
import { stillValid } from "./expiry.js";

/*
 * The refresh lease: a row in the same database as the tokens says who may refresh a connection
 * now (lease_owner, a fresh id per acquisition) and until when (lease_expires_at). Taking it is a
 * compare-and-set (store/oauth.ts acquireLease); the refresh's write is fenced by the owner id and
 * the row's version (writeRefreshed), so a holder whose lease ran out and was taken over can no
 * longer write. Across processes this makes one refresh per connection at a time.
 */

/** The lease's clocks. */
export interface LeaseTiming {
  /** How long a lease lasts: more than a provider timeout, so a live holder is never overtaken. */
  leaseTtlMs: number;
  /** How long a request waits for another refresher before it gives up with a clear error. */
  leaseWaitMs: number;
}

/** The one definition: a lease lasts three provider timeouts; a waiter outwaits it plus a timeout. */
export function leaseTimingFor(providerTimeoutMs: number): LeaseTiming {
  return { leaseTtlMs: providerTimeoutMs * 3, leaseWaitMs: providerTimeoutMs * 4 };
}

/** A lease held: its owner id fences the refresh's write. */
export interface Lease {
  readonly owner: string;
  /** Gives the lease back if this owner still holds it (a no-op otherwise). */
  release(): Promise<void>;
}

interface Target {
  workerId: string;
  key: string;
}

function held(db: Kysely<Database>, target: Target, owner: string): Lease {
  return { owner, release: () => oauthStore.releaseLease(db, target.workerId, target.key, owner) };
}

/** The lease if nobody holds a live one now; undefined at once otherwise (the background refresher's way). */
export async function tryLease(db: Kysely<Database>, target: Target, now: number, ttlMs: number): Promise<Lease | undefined> {
  const owner = randomToken(16);
  if (!(await oauthStore.acquireLease(db, target.workerId, target.key, owner, now, ttlMs))) return undefined;
  return held(db, target, owner);
}

/**
 * Takes the lease, or waits for whoever holds it (jittered backoff from 50 ms to 500 ms), then
 * double-checks under it: another refresher may have written since `seen` was read. Answers the
 * lease with the row as it is under the lease, or, without a lease, a row whose token will do:
 * a newer one that is `goodEnough`, or, once the wait is over, one still valid. A holder whose
 * lease ran out (it crashed, say) is gone: its lease is taken over.
 * @throws the connectedRow errors when the connection went away, and oauth_refresh_busy when the
 *   wait ends with no usable token.
 */
export async function leaseOrNewerRow(
  db: Kysely<Database>,
  target: Target,
  options: { seen: OauthConnectionRow; timing: LeaseTiming; now: () => number; goodEnough: (row: OauthConnectionRow) => boolean },
): Promise<{ lease: Lease; row: OauthConnectionRow } | { lease?: undefined; row: OauthConnectionRow }> {
  const { seen, timing, now, goodEnough } = options;
  const read = async () => connectedRow(await oauthStore.findConnection(db, target.workerId, target.key), target.key);
  const owner = randomToken(16);
  const deadline = now() + timing.leaseWaitMs;
  let delay = 50;
  while (!(await oauthStore.acquireLease(db, target.workerId, target.key, owner, now(), timing.leaseTtlMs))) {
    await new Promise((resolve) => setTimeout(resolve, delay + Math.random() * delay));
    delay = Math.min(delay * 2, 500);
    const row = await read();
    // Another refresher finished: its token is ours too.
    if (row.version !== seen.version && goodEnough(row)) return { row };
    // A holder whose lease ran out is gone: take the lease over.
    if (row.lease_expires_at !== null && row.lease_expires_at <= now()) continue;
    if (now() > deadline) {
      if (stillValid(row, now())) return { row };
      throw refreshBusy(target.key, false);
    }
  }
  const lease = held(db, target, owner);
  try {
    // Double-check under the lease: another process may have refreshed since we looked.
    const row = await read();
    if (row.version !== seen.version && goodEnough(row)) {
      await lease.release();
      return { row };
    }
    return { lease, row };
  } catch (error) {
    await lease.release().catch(() => {});
    throw error;
  }
}
