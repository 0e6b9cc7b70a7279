/**
 * Issue 15, "any process, no loss": webhook deliveries on several server processes over one
 * PostgreSQL. Any process accepts a delivery and any process runs it, one process at a time; a
 * process killed with SIGKILL after answering 202 loses nothing: what it had claimed runs on
 * another once its lease runs out (the run time limit, 5 s here, plus 10 s).
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
worker.webhook("slow", {
  title: "Slow",
  description: "Reports after a second",
  execute: async (events) => {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    await report("slow", events);
  },
});
`;


describe.skipIf(!DIALECTS.includes("postgres"))("webhook deliveries across a cluster (PostgreSQL)", () => {
  let cluster: Cluster;
  let projects: Projects;
  let receiver: Awaited<ReturnType<typeof startReceiver<{ key: string; deliveryId: string }>>>;
  let reported: { key: string; deliveryId: string }[] = [];
  let urls: Record<string, string> = {};
  /** Each delivery's URL path on a given process (the URL's origin is the first process's). */
  const on = (index: number, key: string) => urls[key]!.replace(/^https?:\/\/[^/]+/, cluster.processes[index]!.url);

  beforeAll(async () => {
    receiver = await startReceiver((text) => JSON.parse(text) as { key: string; deliveryId: string });
    reported = receiver.received;
    cluster = await startCluster(3, { env: { WORKYARD_RUN_TIMEOUT: "5s" } });
    projects = await scaffoldProjects(cluster);
    const dir = projects.project("hooks", SOURCE);
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

  it("loses nothing when the process that accepted and claimed deliveries is killed (SIGKILL) after its 202s", async () => {
    const victim = cluster.processes[0]!;
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const answer = await fetch(on(0, "slow"), { method: "POST", body: JSON.stringify({ i }), headers: { "content-type": "application/json" } });
      expect(answer.status).toBe(202);
      ids.push(((await answer.json()) as { deliveryId: string }).deliveryId);
    }
    // Killed while its runs sleep: at least one delivery is running under its lease.
    await until("a delivery claimed by the victim", async () => (await cluster.sql("select id from webhook_deliveries where id = any($1) and status = 'running' and lease_owner like $2", [ids, `%:${victim.pid}:%`])).length > 0, 10_000);
    await victim.kill("SIGKILL");
    await until("every delivery, run by the others", () => ids.every((id) => reported.some((r) => r.deliveryId === id)), 40_000);
    // At least once: a victim's run that had reported just before the kill runs again elsewhere.
    await until("every delivery recorded", async () => (await cluster.sql("select id from webhook_deliveries where id = any($1) and status = 'succeeded'", [ids])).length === 3, 10_000);
  });
});
