/**
 * Webhooks (issue 15), against baselines measured in the same run:
 * - ingress: p50/p99 of the 202 at 1 and at 64 concurrent senders, interleaved round by round with
 *   a bare node:http server answering 202 with the same JSON shape (target: p50 within 0.5 ms of
 *   it on SQLite). Every answer is checked (202 with a deliveryId); the deliveries it accepts run
 *   meanwhile, as they would, and the queue is drained before the next round.
 * - end to end: N deliveries sent by 16 senders to a webhook whose execute reports when it starts:
 *   deliveries run per second, and the time from each 202 to the start of its execute (p50, p99),
 *   which grows with the backlog of a burst; then the same time for one delivery at a time.
 *
 *   npx tsx bench/webhooks.ts [--seconds 3] [--rounds 3] [--deliveries 2000] [--postgres]
 */
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { parseArgs } from "node:util";
import { benchDatabase, benchServer, deploy, makeProject } from "./fixtures.js";
import { bareServer, client, header, loadInThread, stats, type Stats } from "./lib.js";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "3" },
    rounds: { type: "string", default: "3" },
    deliveries: { type: "string", default: "2000" },
    postgres: { type: "boolean", default: false },
  },
});
const durationMs = Number(values.seconds) * 1000;
const rounds = Number(values.rounds);
const deliveries = Number(values.deliveries);

/** What each execute reports: the delivery and when its execute started (this machine's clock). */
const started = new Map<string, number>();
const receiver = http.createServer((req, res) => {
  let text = "";
  req.on("data", (chunk: Buffer) => (text += chunk.toString("utf8")));
  req.on("end", () => {
    const { deliveryId, at } = JSON.parse(text) as { deliveryId: string; at: number };
    started.set(deliveryId, at);
    res.end();
  });
});
receiver.keepAliveTimeout = 60_000;
await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve));
const receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/`;

const SOURCE = `import { Worker } from "@notionhq/workers";
const worker = new Worker();
export default worker;
worker.webhook("noop", { title: "No-op", description: "Does nothing", execute: async () => {} });
worker.webhook("timed", {
  title: "Timed",
  description: "Reports when it starts",
  execute: async (events) => {
    const at = Date.now();
    for (const event of events) await fetch(process.env.RECEIVER_URL, { method: "POST", body: JSON.stringify({ deliveryId: event.deliveryId, at }) });
  },
});
`;

const { databaseUrl, drop: dropSchema } = await benchDatabase(values.postgres);
// The ingress limits are the documented defaults in production; here they would only measure 429s.
const bench = await benchServer({ backgroundRefresh: false, webhookRate: "100000000,100000000", webhookMaxQueued: "10000000", ...(databaseUrl ? { databaseUrl } : {}) });
const project = makeProject(SOURCE, "bench-webhooks");
const { workerId } = await deploy(bench, project, "bench-webhooks");
const api = client(bench.server.url, 1);
const auth = { authorization: `Bearer ${bench.token}` };
const set = await api.post("/api/v3/workersUpsertSecrets", { workerId, secrets: [{ key: "RECEIVER_URL", value: receiverUrl }] }, auth);
if (set.status !== 200) throw new Error(`UpsertSecrets: ${set.status} ${set.text}`);
const listed = await api.post("/api/v3/workersListWebhooks", { workerId }, auth);
const urls = Object.fromEntries((JSON.parse(listed.text) as { webhooks: { key: string; url: string }[] }).webhooks.map((w) => [w.key, new URL(w.url).pathname]));
const bare = await bareServer({ deliveryId: "00000000-0000-0000-0000-000000000000" }, 202);
const event = { action: "opened", number: 1, repository: { full_name: "acme/app" }, sender: { login: "octocat" } };

/** Deliveries not finished yet (queued or running), from the store. */
async function waiting(): Promise<number> {
  const row = await bench.server.store.db
    .selectFrom("webhook_deliveries")
    .select((eb) => eb.fn.countAll<number>().as("n"))
    .where("status", "in", ["queued", "running"])
    .executeTakeFirstOrThrow();
  return Number(row.n);
}
async function drained(limitMs = 300_000): Promise<void> {
  const deadline = Date.now() + limitMs;
  while ((await waiting()) > 0) {
    if (Date.now() > deadline) throw new Error("the deliveries did not drain in time");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const µs = (ms: number) => `${(ms * 1000).toFixed(0).padStart(5)} µs`;

for (const concurrency of [1, 64]) {
  header(`Webhook ingress, ${concurrency} sender${concurrency > 1 ? "s" : ""}, ${values.postgres ? "PostgreSQL" : "SQLite"} (median of ${rounds} interleaved rounds of ${values.seconds} s)`);
  const seen: Record<"bare" | "ingress", Stats[]> = { bare: [], ingress: [] };
  for (let round = 0; round < rounds; round++) {
    seen.bare.push(await loadInThread({ url: bare.url, path: "/x", body: event, concurrency, durationMs, expect: '"deliveryId"', expectStatus: 202 }));
    seen.ingress.push(await loadInThread({ url: bench.server.url, path: urls.noop!, body: event, concurrency, durationMs, expect: '"deliveryId"', expectStatus: 202 }));
    await drained();
  }
  const line = (label: string, name: "bare" | "ingress") => {
    const s = seen[name];
    const bad = s.reduce((sum, x) => sum + (x.bad ?? 0), 0);
    console.log(
      `${label.padEnd(34)} p50 ${µs(median(s.map((x) => x.p50)))}  p99 ${µs(median(s.map((x) => x.p99)))}  ${median(s.map((x) => x.throughput)).toFixed(0).padStart(6)} req/s` +
        (bad ? `   ${bad} BAD ANSWERS (${s.find((x) => x.firstBad)?.firstBad})` : ""),
    );
  };
  line("bare node:http answering 202", "bare");
  line("webhook ingress (202, stored)", "ingress");
  const over = median(seen.ingress.map((x) => x.p50)) - median(seen.bare.map((x) => x.p50));
  console.log(`p50 over bare: ${(over * 1000).toFixed(0)} µs (target: within 500 µs on SQLite)`);
}

header(`Webhook deliveries end to end, ${deliveries} sent by 16 senders, ${values.postgres ? "PostgreSQL" : "SQLite"}`);
{
  const sender = client(bench.server.url, 16);
  const accepted = new Map<string, number>();
  let next = 0;
  let bad = 0;
  const t0 = Date.now();
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < deliveries) {
        next += 1;
        const answer = await sender.post(urls.timed!, event);
        if (answer.status !== 202) bad += 1;
        else accepted.set((JSON.parse(answer.text) as { deliveryId: string }).deliveryId, Date.now());
      }
    }),
  );
  const sentMs = Date.now() - t0;
  const deadline = Date.now() + 300_000;
  while ([...accepted.keys()].some((id) => !started.has(id))) {
    if (Date.now() > deadline) throw new Error("not every delivery ran in time");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const lastStart = Math.max(...[...accepted.keys()].map((id) => started.get(id)!));
  const waits = [...accepted].map(([id, at]) => Math.max(0, started.get(id)! - at));
  const wait = stats(waits, 1);
  console.log(`accepted ${accepted.size} of ${deliveries} (${bad} not 202) in ${sentMs} ms; every execute started ${lastStart - t0} ms after the first send`);
  console.log(`deliveries run end to end: ${((accepted.size / (lastStart - t0)) * 1000).toFixed(0)} per second (ingress alone: ${((accepted.size / sentMs) * 1000).toFixed(0)} per second)`);
  console.log(`202 -> execute starts: p50 ${wait.p50.toFixed(1)} ms  p99 ${wait.p99.toFixed(1)} ms  (clock: ms)`);
  sender.close();
  await drained();
}

header(`Webhook 202 -> execute, one delivery at a time (200), ${values.postgres ? "PostgreSQL" : "SQLite"}`);
{
  const waits: number[] = [];
  for (let i = 0; i < 200; i++) {
    const answer = await api.post(urls.timed!, event);
    const at = Date.now();
    if (answer.status !== 202) throw new Error(`ingress: ${answer.status} ${answer.text}`);
    const { deliveryId } = JSON.parse(answer.text) as { deliveryId: string };
    const deadline = Date.now() + 30_000;
    while (!started.has(deliveryId)) {
      if (Date.now() > deadline) throw new Error("a delivery did not run in time");
      await new Promise((resolve) => setImmediate(resolve));
    }
    waits.push(Math.max(0, started.get(deliveryId)! - at));
  }
  const wait = stats(waits, 1);
  console.log(`202 -> execute starts: p50 ${wait.p50.toFixed(1)} ms  p99 ${wait.p99.toFixed(1)} ms`);
  await drained();
}

api.close();
await bare.stop();
await bench.stop();
await new Promise<void>((resolve) => receiver.close(() => resolve()));
await dropSchema();
fs.rmSync(project, { recursive: true, force: true });
