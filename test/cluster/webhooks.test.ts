/**
 * Issue 15, "any process, no loss": webhook deliveries on several server processes over one
 * PostgreSQL. Any process accepts a delivery and any process runs it, one process at a time; a
 * process killed with SIGKILL after answering 202 loses nothing: what it had claimed runs on
 * another once its lease runs out (the run time limit, 5 s here, plus 10 s). The test:
 * 1,000 deliveries sent across three processes while one is killed and restarted; every 202
 * succeeds, and the runs of one delivery (as the worker reports their start and end) never overlap.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ok, scaffoldProjects, startCluster, until, type Cluster, type Projects } from "../helpers/cluster.js";
import { startReceiver } from "../helpers/receiver.js";
import { DIALECTS } from "../helpers/dialects.js";

const SOURCE = `import { Worker } from "@notionhq/workers";
const worker = new Worker();
export default worker;

async function report(key, events) {
  for (const event of events) {
    await fetch(process.env.RECEIVER_URL, { method: "POST", body: JSON.stringify({ key, deliveryId: event.deliveryId }) });
  }
}

worker.webhook("quick", { title: "Quick", description: "Reports at once", execute: async (events) => report("quick", events) });
worker.webhook("tracked", {
  title: "Tracked",
  description: "Reports when each run starts and ends",
  execute: async (events) => {
    const run = Math.random().toString(36).slice(2);
    for (const event of events) {
      const at = () => Date.now();
      await fetch(process.env.RECEIVER_URL, { method: "POST", body: JSON.stringify({ key: "tracked", deliveryId: event.deliveryId, run, phase: "start", at: at() }) });
      await new Promise((resolve) => setTimeout(resolve, 20));
      await fetch(process.env.RECEIVER_URL, { method: "POST", body: JSON.stringify({ key: "tracked", deliveryId: event.deliveryId, run, phase: "end", at: at() }) });
    }
  },
});
`;


interface Report {
  key: string;
  deliveryId: string;
  run?: string;
  phase?: "start" | "end";
  at?: number;
}

describe.skipIf(!DIALECTS.includes("postgres"))("webhook deliveries across a cluster (PostgreSQL)", () => {
  let cluster: Cluster;
  let projects: Projects;
  let receiver: Awaited<ReturnType<typeof startReceiver<Report>>>;
  let reported: Report[] = [];
  let urls: Record<string, string> = {};
  /** The worker's project folder (deployed in beforeAll). */
  let dir: string;
  /** Each delivery's URL path on a given process (the URL's origin is the first process's). */
  const on = (index: number, key: string) => urls[key]!.replace(/^https?:\/\/[^/]+/, cluster.processes[index]!.url);

  beforeAll(async () => {
    receiver = await startReceiver((text) => JSON.parse(text) as Report);
    reported = receiver.received;
    cluster = await startCluster(3, { env: { WORKYARD_RUN_TIMEOUT: "5s", WORKYARD_WEBHOOK_RATE: "100000,100000" } });
    projects = await scaffoldProjects(cluster);
    dir = projects.project("hooks", SOURCE);
    const first = cluster.processes[0]!.url;
    await projects.deploy(first, dir);
    ok(await projects.cli(first, ["workers", "env", "set", `RECEIVER_URL=${receiver.url}`], dir));
    const listed = JSON.parse(ok(await projects.cli(cluster.processes[1]!.url, ["workers", "webhooks", "list", "--json"], dir)).stdout) as { key: string; url: string }[];
    urls = Object.fromEntries(listed.map((w) => [w.key, w.url]));
  }, 240_000);
  afterAll(async () => {
    await cluster?.stop();
    projects?.cleanup();
    await receiver?.close();
  });

  it("accepts on any process and runs each delivery once, on one process at a time", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 30; i++) {
      const answer = await fetch(on(i % 3, "quick"), { method: "POST", body: JSON.stringify({ i }), headers: { "content-type": "application/json" } });
      expect(answer.status).toBe(202);
      ids.push(((await answer.json()) as { deliveryId: string }).deliveryId);
    }
    await until("every delivery", () => ids.every((id) => reported.some((r) => r.deliveryId === id)), 30_000);
    // The worker reports before its run ends and the delivery is recorded.
    await until("every delivery recorded", async () => (await cluster.sql("select id from webhook_deliveries where id = any($1) and status = 'succeeded'", [ids])).length === 30, 10_000);
    const rows = await cluster.sql<{ id: string; status: string; attempts: number; run_ids: string }>(
      "select id, status, attempts, run_ids from webhook_deliveries where id = any($1)",
      [ids],
    );
    expect(rows).toHaveLength(30);
    // One run per attempt (an attempt that failed on a loaded machine, its run timed out say, is
    // retried: that is a second attempt, not a second claim); a delivery tried once reported once.
    for (const row of rows) {
      const runs = (JSON.parse(row.run_ids) as string[]).length;
      expect({ status: row.status, runs }).toEqual({ status: "succeeded", runs: row.attempts });
      if (row.attempts === 1) expect(reported.filter((r) => r.deliveryId === row.id)).toHaveLength(1);
    }
  });

  it("a rotated URL is refused by every process within 1 s, each having just taken a delivery on it (rows kept in memory)", async () => {
    const old = [0, 1, 2].map((i) => on(i, "quick"));
    for (const url of old) expect((await fetch(url, { method: "POST", body: "{}" })).status).toBe(202);
    const rotated = ok(await projects.cli(cluster.processes[0]!.url, ["workers", "webhooks", "rotate", "quick", "--yes"], dir)).stdout.trim().split("\n").at(-1)!;
    const since = Date.now();
    expect(rotated).toMatch(/^https?:\/\/.*\/quick$/);
    for (const [index, url] of old.entries()) {
      // Answered 404 by every process within 1 s of the rotation's answer; the new URL is taken.
      await until(`process ${index} refuses the old URL`, async () => (await fetch(url, { method: "POST", body: "{}" })).status === 404, 1000 - (Date.now() - since));
      const fresh = rotated.replace(/^https?:\/\/[^/]+/, cluster.processes[index]!.url);
      expect((await fetch(fresh, { method: "POST", body: "{}" })).status).toBe(202);
    }
    expect(Date.now() - since).toBeLessThan(1000 + 500);
    urls.quick = rotated;
  });

  it("1,000 deliveries across the processes while one is SIGKILLed and restarted: each 202 succeeds, none runs twice at once", async () => {
    const victimIndex = 0;
    const live = new Set([0, 1, 2]);
    const accepted = new Set<string>();
    /** Requests that were under way on the victim when it died: stored perhaps, never answered. */
    let lostInFlight = 0;
    let sent = 0;
    let killed = false;
    let killedAt = Number.POSITIVE_INFINITY;
    let restart: Promise<void> | undefined;
    const TOTAL = 1000;
    const send = async (n: number) => {
      // A sender tries again (a new delivery) on another process when one does not answer.
      for (let attempt = 0; ; attempt++) {
        const candidates = [...live];
        const index = candidates[(n + attempt) % candidates.length]!;
        let answer: Response;
        try {
          answer = await fetch(on(index, "tracked"), { method: "POST", body: JSON.stringify({ n }), headers: { "content-type": "application/json" } });
        } catch (error) {
          if (index !== victimIndex || !killed) throw error;
          lostInFlight += 1;
          continue;
        }
        expect(answer.status).toBe(202);
        accepted.add(((await answer.json()) as { deliveryId: string }).deliveryId);
        return;
      }
    };
    await Promise.all(
      Array.from({ length: 20 }, async () => {
        while (sent < TOTAL) {
          const n = sent++;
          if (n === 300) {
            // A third of the way: the victim dies with deliveries claimed and runs under way.
            killed = true;
            await cluster.processes[victimIndex]!.kill("SIGKILL");
            killedAt = Date.now();
            live.delete(victimIndex);
            restart = cluster.start({ dataDir: cluster.processes[victimIndex]!.dataDir }).then((proc) => {
              cluster.processes[victimIndex] = proc;
              live.add(victimIndex);
            });
          }
          await send(n);
        }
      }),
    );
    await restart;
    expect(accepted.size).toBe(TOTAL);
    const ids = [...accepted];
    // Every delivery that got a 202 succeeds; the victim's claims after their leases ran out.
    await until(
      "every accepted delivery to succeed",
      async () => (await cluster.sql<{ n: number }>("select count(*)::int as n from webhook_deliveries where id = any($1) and status = 'succeeded'", [ids]))[0]!.n === TOTAL,
      90_000,
      500,
    );
    // Exactly the deliveries that got a 202 succeeded, besides those of requests the victim took
    // and died before answering (their sender saw no 202; they run all the same).
    const succeeded = await cluster.sql<{ id: string }>("select id from webhook_deliveries where webhook_key = 'tracked' and status = 'succeeded'");
    const others = succeeded.filter((row) => !accepted.has(row.id));
    expect(others.length).toBeLessThanOrEqual(lostInFlight);
    // No delivery ran twice at the same time: its runs (started, ended as the worker reported
    // them; a run the kill cut short ends at the latest when its process died, another run that
    // did not report its end when the platform recorded it) never overlap.
    const runs = new Map<string, { deliveryId: string; start: number; end?: number }>();
    for (const report of reported.filter((r) => r.key === "tracked")) {
      const run = runs.get(report.run!) ?? { deliveryId: report.deliveryId, start: Number.NaN };
      if (report.phase === "start") run.start = report.at!;
      else run.end = report.at!;
      runs.set(report.run!, run);
    }
    const byDelivery = new Map<string, { start: number; end?: number }[]>();
    for (const run of runs.values()) {
      // A run the kill cut short never reported its end: it ended when its process died.
      if (run.end === undefined && run.start <= killedAt) run.end = killedAt;
    }
    for (const run of runs.values()) byDelivery.set(run.deliveryId, [...(byDelivery.get(run.deliveryId) ?? []), run]);
    let twice = 0;
    for (const [deliveryId, list] of byDelivery) {
      list.sort((a, b) => a.start - b.start);
      for (let i = 1; i < list.length; i++) {
        twice += 1;
        const before = list[i - 1]!;
        let platform = "";
        if (before.end === undefined) {
          // A run on a live process that ended before its last report (its report failed, it passed
          // its time limit, its process died): it ended when the platform recorded its end, which
          // is the latest of the delivery's runs that started before the worker's report of it.
          const [delivery] = await cluster.sql<{ run_ids: string }>("select run_ids from webhook_deliveries where id = $1", [deliveryId]);
          const recorded = await cluster.sql<{ id: string; status: string; started_at: number; ended_at: number | null; error: string | null }>(
            "select id, status, started_at, ended_at, error from runs where id = any($1) order by started_at",
            [JSON.parse(delivery!.run_ids) as string[]],
          );
          before.end = recorded.filter((r) => r.started_at <= before.start).at(-1)?.ended_at ?? undefined;
          platform = ` (the worker's reports: ${JSON.stringify(list)}; the platform's runs: ${JSON.stringify(recorded)})`;
        }
        expect(before.end, `run of ${deliveryId} still going when another started${platform}`).toBeDefined();
        expect(before.end!, `run of ${deliveryId} ended after another started${platform}`).toBeLessThanOrEqual(list[i]!.start);
      }
    }
    for (const id of ids) expect(byDelivery.has(id), `a run of ${id}`).toBe(true);
    console.log(`1,000 deliveries: ${byDelivery.size} delivered, ${twice} run again after the kill, ${lostInFlight} requests lost in flight`);
  }, 240_000);
});
