/**
 * Webhooks (issue 15), against baselines measured in the same run:
 * - ingress: p50/p99 of the 202 at 1 and at 64 concurrent senders, interleaved round by round with
 *   a bare node:http server answering 202 with the same JSON shape (target: p50 within 0.5 ms of
 *   it on SQLite). Every answer is checked (202 and a deliveryId). The deliveries taken run
 *   meanwhile, as they would in service; the queue is drained between rounds, off the clock.
 * - one delivery at a time on an otherwise idle server (paced, one every --gap ms): the 202 beside
 *   the bare server's, and the time from the moment the sender has its 202 to the start of execute.
 * - end to end: --deliveries sent at once by 16 senders; deliveries run per second until the store
 *   has them all succeeded, and 202 -> execute across that burst (mostly the wait in the queue).
 *
 * The webhook's execute only logs when it starts (wall clock with sub-millisecond digits, the same
 * machine clock as the bench's); the bench reads that from the runs' logs afterwards, so nothing
 * but the log line is added to each run. Every delivery must end succeeded.
 *
 *   npx tsx bench/webhooks.ts [--seconds 3] [--rounds 3] [--deliveries 2000] [--paced 200] [--gap 20]
 *                             [--postgres] [--client thread|process] [--only ingress,paced,burst] [--senders 1,64]
 *
 * --client process runs each ingress load from a Node process of its own (a client outside the
 * server's process); the default is a worker thread of the bench process.
 */
import fs from "node:fs";
import { parseArgs } from "node:util";
import { benchDatabase, benchServer, deploy, makeProject } from "./fixtures.js";
import { bareServer, client, countPostgresRoundTrips, header, loadInProcess, loadInThread, stats, type Stats } from "./lib.js";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "3" },
    rounds: { type: "string", default: "3" },
    deliveries: { type: "string", default: "2000" },
    paced: { type: "string", default: "200" },
    gap: { type: "string", default: "20" },
    postgres: { type: "boolean", default: false },
    client: { type: "string", default: "thread" },
    // Some parts only (a shorter run, for a profile or a quiet moment on a shared machine).
    only: { type: "string" },
    senders: { type: "string", default: "1,64" },
  },
});
const durationMs = Number(values.seconds) * 1000;
const rounds = Number(values.rounds);
const burst = Number(values.deliveries);
const paced = Number(values.paced);
const gapMs = Number(values.gap);
const loadWith = values.client === "process" ? loadInProcess : loadInThread;
const engine = values.postgres ? "PostgreSQL" : "SQLite";
const part = (name: "ingress" | "paced" | "burst") => values.only === undefined || values.only.split(",").includes(name);

const roundTrips = await countPostgresRoundTrips();

/** The wall clock with sub-millisecond digits; the worker process reads it the same way. */
const wallNow = () => performance.timeOrigin + performance.now();

const SOURCE = `import { Worker } from "@notionhq/workers";
const worker = new Worker();
export default worker;
worker.webhook("timed", {
  title: "Timed",
  description: "Logs when it starts, and does nothing else",
  execute: async () => {
    console.log("execute started at " + (performance.timeOrigin + performance.now()));
  },
});
`;

const { databaseUrl, drop: dropSchema } = await benchDatabase(values.postgres);
// The ingress rate limits and the queue's bound would otherwise answer 429 and 503 here.
const bench = await benchServer({ backgroundRefresh: false, webhookRate: "100000000,100000000", webhookMaxQueued: "10000000", ...(databaseUrl ? { databaseUrl } : {}) });
const project = makeProject(SOURCE, "bench-webhooks");
const { workerId } = await deploy(bench, project, "bench-webhooks");
const db = bench.server.store.db;
const api = client(bench.server.url, 1);
const listed = await api.post("/api/v3/workersListWebhooks", { workerId }, { authorization: `Bearer ${bench.token}` });
if (listed.status !== 200) throw new Error(`ListWebhooks: ${listed.status} ${listed.text}`);
const hook = (JSON.parse(listed.text) as { webhooks: { key: string; url: string }[] }).webhooks.find((w) => w.key === "timed");
if (!hook) throw new Error(`ListWebhooks has no webhook "timed": ${listed.text}`);
// The path only: it holds the webhook's secret, which is not printed.
const hookPath = new URL(hook.url).pathname;
const bare = await bareServer({ deliveryId: "00000000-0000-0000-0000-000000000000" }, 202);
const event = { action: "opened", number: 1, repository: { full_name: "acme/app" }, sender: { login: "octocat" } };

/** Deliveries of the bench's worker not finished yet (queued or running). */
async function unfinished(): Promise<number> {
  const row = await db
    .selectFrom("webhook_deliveries")
    .select((eb) => eb.fn.countAll<number>().as("n"))
    .where("worker_id", "=", workerId)
    .where("status", "in", ["queued", "running"])
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

/** Waits until every delivery taken so far has finished; throws past `limitMs`. */
async function drain(limitMs: number): Promise<void> {
  const deadline = Date.now() + limitMs;
  while ((await unfinished()) > 0) {
    if (Date.now() > deadline) throw new Error(`deliveries still unfinished after ${limitMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** When each delivery's execute started, from its run's log line (runs are committed just after they end). */
async function executeStarts(ids: string[]): Promise<Map<string, number>> {
  const starts = new Map<string, number>();
  const deadline = Date.now() + 10_000;
  while (starts.size < ids.length) {
    const missing = ids.filter((id) => !starts.has(id));
    for (let i = 0; i < missing.length; i += 500) {
      const rows = await db.selectFrom("runs").select(["delivery_id", "logs"]).where("delivery_id", "in", missing.slice(i, i + 500)).execute();
      for (const row of rows) {
        const at = /execute started at (\d+(?:\.\d+)?)/.exec(row.logs ?? "");
        if (at && row.delivery_id) starts.set(row.delivery_id, Number(at[1]));
      }
    }
    if (starts.size === ids.length) break;
    if (Date.now() > deadline) throw new Error(`${ids.length - starts.size} of ${ids.length} deliveries have no run with a start logged`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return starts;
}

/** The 202 -> execute waits (ms; negative when execute started before the sender read its 202). */
async function waitsFor(answered: Map<string, number>): Promise<number[]> {
  const starts = await executeStarts([...answered.keys()]);
  return [...answered].map(([id, at]) => starts.get(id)! - at);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const µs = (ms: number, width = 5) => `${(ms * 1000).toFixed(0).padStart(width)} µs`;
const ms = (x: number) => `${x.toFixed(2)} ms`;
const deliveryIdOf = (text: string) => (JSON.parse(text) as { deliveryId: string }).deliveryId;

// 1. The ingress against the bare server.
for (const concurrency of part("ingress") ? values.senders.split(",").map(Number) : []) {
  header(`Webhook ingress, ${concurrency} sender${concurrency > 1 ? "s" : ""}, ${engine}, client in a ${values.client === "process" ? "process of its own" : "worker thread"} (median of ${rounds} interleaved rounds of ${values.seconds} s)`);
  const seen: Record<"bare" | "ingress", Stats[]> = { bare: [], ingress: [] };
  let drainMs = 0;
  for (let round = 0; round < rounds; round++) {
    seen.bare.push(await loadWith({ url: bare.url, path: "/x", body: event, concurrency, durationMs, expect: '"deliveryId"', expectStatus: 202 }));
    seen.ingress.push(await loadWith({ url: bench.server.url, path: hookPath, body: event, concurrency, durationMs, expect: '"deliveryId"', expectStatus: 202 }));
    const t0 = performance.now();
    await drain(600_000);
    drainMs += performance.now() - t0;
  }
  const p50 = (name: keyof typeof seen) => median(seen[name].map((s) => s.p50));
  const p99 = (name: keyof typeof seen) => median(seen[name].map((s) => s.p99));
  const rps = (name: keyof typeof seen) => median(seen[name].map((s) => s.throughput));
  const line = (label: string, name: keyof typeof seen, extra = "") => {
    const bad = seen[name].reduce((sum, s) => sum + (s.bad ?? 0), 0);
    const wrong = bad ? `   ${bad} BAD ANSWERS (${seen[name].find((s) => s.firstBad)?.firstBad})` : "";
    console.log(`${label.padEnd(34)} p50 ${µs(p50(name))}  p99 ${µs(p99(name), 6)}  ${rps(name).toFixed(0).padStart(6)} req/s${extra}${wrong}`);
  };
  const over = p50("ingress") - p50("bare");
  line("bare node:http answering 202", "bare");
  line("webhook ingress (202, stored)", "ingress", `   p50 +${(over * 1000).toFixed(0)} µs, ${(p50("ingress") / p50("bare")).toFixed(2)}x bare; throughput ${((rps("ingress") / rps("bare")) * 100).toFixed(0)} % of bare`);
  const accepted = seen.ingress.reduce((sum, s) => sum + s.count, 0);
  console.log(`p50 within 500 µs of bare${values.postgres ? " (the target is SQLite's)" : ""}: ${over <= 0.5 ? "met" : "NOT MET"}; the ${accepted} deliveries measured then drained in ${(drainMs / 1000).toFixed(1)} s in all`);
}

// 2. One delivery at a time: the 202 and the path from the store to a run, with nothing queued.
if (part("paced")) {
  header(`Webhook ingress and 202 -> execute, ${paced} deliveries one at a time (one every ${gapMs} ms, one connection), ${engine}`);
  const answered = new Map<string, number>();
  // The 202 itself, on a server with nothing else to do, beside the bare server's (sent just before).
  const roundTrip: Record<"bare" | "ingress", number[]> = { bare: [], ingress: [] };
  const bareClient = client(bare.url, 1);
  const before = roundTrips();
  for (let i = 0; i < paced; i++) {
    const sent = performance.now();
    const floor = await bareClient.post("/x", event);
    roundTrip.bare.push(performance.now() - sent);
    if (floor.status !== 202) throw new Error(`bare: ${floor.status} ${floor.text}`);
    const t0 = performance.now();
    const answer = await api.post(hookPath, event);
    roundTrip.ingress.push(performance.now() - t0);
    if (answer.status !== 202) throw new Error(`ingress: ${answer.status} ${answer.text}`);
    answered.set(deliveryIdOf(answer.text), wallNow());
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, gapMs - (performance.now() - sent))));
  }
  const statements = (roundTrips() - before) / paced;
  bareClient.close();
  await drain(60_000);
  const waits = await waitsFor(answered);
  const wait = stats(waits, 1);
  const later = waits.filter((w) => w > gapMs).length;
  const floor = stats(roundTrip.bare, 1);
  const ingress = stats(roundTrip.ingress, 1);
  console.log(`${"bare node:http answering 202".padEnd(34)} p50 ${µs(floor.p50)}  p99 ${µs(floor.p99, 6)}`);
  console.log(`${"webhook ingress (202, stored)".padEnd(34)} p50 ${µs(ingress.p50)}  p99 ${µs(ingress.p99, 6)}   p50 +${((ingress.p50 - floor.p50) * 1000).toFixed(0)} µs over bare`);
  console.log(`202 -> execute starts: p50 ${ms(wait.p50)}  p99 ${ms(wait.p99)}  min ${ms(Math.min(...waits))}  max ${ms(Math.max(...waits))}  (n=${wait.count})`);
  console.log(`execute before the sender read its 202: ${waits.filter((w) => w < 0).length}; after the next delivery was sent (not one at a time): ${later}`);
  // Everything a delivery costs there: ingress, claim, the run's record, its end.
  if (values.postgres) console.log(`PostgreSQL statements per delivery, all included: ${statements.toFixed(1)}`);
}

// 3. A burst end to end: how fast deliveries run once they are queued faster than they can run.
if (part("burst")) {
  header(`Webhook deliveries end to end, ${burst} sent at once by 16 senders, trivial execute, ${engine}`);
  // Sent from the bench's own thread: what is measured here is how fast deliveries run, not the 202s.
  const sender = client(bench.server.url, 16);
  const answered = new Map<string, number>();
  let next = 0;
  let refused = 0;
  let firstRefusal = "";
  const t0 = Date.now();
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < burst) {
        next += 1;
        const answer = await sender.post(hookPath, event);
        if (answer.status === 202 && answer.text.includes('"deliveryId"')) answered.set(deliveryIdOf(answer.text), wallNow());
        else {
          refused += 1;
          firstRefusal ||= `${answer.status} ${answer.text.slice(0, 200)}`;
        }
      }
    }),
  );
  const sentMs = Date.now() - t0;
  sender.close();
  await drain(Math.max(60_000, burst * 50));
  const ids = [...answered.keys()];
  let lastFinished = 0;
  let succeeded = 0;
  for (let i = 0; i < ids.length; i += 500) {
    const rows = await db.selectFrom("webhook_deliveries").select(["status", "finished_at"]).where("id", "in", ids.slice(i, i + 500)).execute();
    for (const row of rows) {
      if (row.status === "succeeded") succeeded += 1;
      lastFinished = Math.max(lastFinished, row.finished_at ?? 0);
    }
  }
  const wait = stats(await waitsFor(answered), 1);
  const totalMs = lastFinished - t0;
  console.log(`202s: ${answered.size} of ${burst}${refused ? ` (${refused} REFUSED: ${firstRefusal})` : ""} in ${sentMs} ms, ${((answered.size / sentMs) * 1000).toFixed(0)} per second`);
  console.log(`${succeeded} of ${answered.size} succeeded, the last ${totalMs} ms after the first was sent: ${((succeeded / totalMs) * 1000).toFixed(0)} deliveries per second end to end${succeeded < answered.size ? `   ${answered.size - succeeded} NOT SUCCEEDED` : ""}`);
  console.log(`202 -> execute starts across the burst (the wait in the queue): p50 ${ms(wait.p50)}  p99 ${ms(wait.p99)}`);
}

// Every delivery of the run, the ingress rounds' included, must have succeeded.
const outcomes = await db.selectFrom("webhook_deliveries").select(["status", (eb) => eb.fn.countAll<number>().as("n")]).where("worker_id", "=", workerId).groupBy("status").execute();
console.log(`\ndeliveries in the store: ${outcomes.map((o) => `${Number(o.n)} ${o.status}`).join(", ")}`);

api.close();
await bare.stop();
await bench.stop();
await dropSchema();
fs.rmSync(project, { recursive: true, force: true });
if (outcomes.some((o) => o.status !== "succeeded")) process.exitCode = 1;
