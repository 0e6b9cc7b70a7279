/**
 * Issue 15, bad input and limits: a worker whose execute never ends (its runs hit the time limit
 * and the delivery is retried, then failed), and a burst from one sender far past the ingress rate
 * and the queue's bound: 429 and 503 with Retry-After, and every delivery that got a 202 runs.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliEnv, fixtureDeps, writeProject } from "../build-run/fixtures.js";
import { until } from "../helpers/cluster.js";
import { startReceiver } from "../helpers/receiver.js";
import { ntn, ok } from "../helpers/run-ntn.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { tempDir } from "../helpers/tmp.js";

const SOURCE = `import { Worker } from "@notionhq/workers";
const worker = new Worker();
export default worker;

worker.webhook("count", {
  title: "Count",
  description: "Takes a tenth of a second, then reports",
  execute: async (events) => {
    await new Promise((resolve) => setTimeout(resolve, 100));
    for (const event of events) await fetch(process.env.RECEIVER_URL, { method: "POST", body: event.deliveryId });
  },
});

worker.webhook("held", {
  title: "Held",
  description: "Waits until the test lets it go, then reports",
  execute: async (events) => {
    await fetch(process.env.HOLD_URL);
    for (const event of events) await fetch(process.env.RECEIVER_URL, { method: "POST", body: event.deliveryId });
  },
});

worker.webhook("hangs", {
  title: "Hangs",
  description: "Reports that it started, then never ends (its event loop stays free)",
  execute: async (events) => {
    for (const event of events) await fetch(process.env.RECEIVER_URL, { method: "POST", body: "hangs:" + event.deliveryId });
    await new Promise(() => {});
  },
});

worker.webhook("waits", {
  title: "Waits",
  description: "Waits on a second hold, then reports",
  execute: async (events) => {
    await fetch(process.env.SECOND_HOLD_URL);
    for (const event of events) await fetch(process.env.RECEIVER_URL, { method: "POST", body: event.deliveryId });
  },
});

worker.webhook("loops", {
  title: "Loops",
  description: "Never ends",
  execute: async () => {
    for (;;) {}
  },
});
`;

describe("a looping worker, and a burst past the limits", () => {
  let server: TestServer;
  let tmp: { dir: string; cleanup(): void };
  let dir: string;
  let env: Record<string, string | undefined>;
  let receiver: Awaited<ReturnType<typeof startReceiver<string>>>;
  let reported: string[] = [];
  let urls: Record<string, string> = {};
  let hold: Awaited<ReturnType<typeof startHold>>;
  const deliveriesOf = async (key: string) =>
    JSON.parse(ok(await ntn(["workers", "webhooks", "deliveries", key, "--json"], { cwd: dir, env })).stdout) as {
      deliveryId: string;
      status: string;
      attempts: number;
      runIds: string[];
      error: string | null;
    }[];

  const deliveryOf = async (key: string, id: string) => (await deliveriesOf(key)).find((d) => d.deliveryId === id);
  /** Posts an empty event to a webhook: the delivery's id (a 202 expected). */
  const accept = async (key: string) => {
    const answer = await fetch(urls[key]!, { method: "POST", body: "{}" });
    expect(answer.status).toBe(202);
    return ((await answer.json()) as { deliveryId: string }).deliveryId;
  };
  /**
   * A hold of the test's own for the `waits` runs, set as a variable: new variables, a new set of
   * processes, so the runs the test starts share one.
   */
  const withOwnHold = async (test: (hold: Awaited<ReturnType<typeof startHold>>) => Promise<void>) => {
    const own = await startHold();
    try {
      ok(await ntn(["workers", "env", "set", `SECOND_HOLD_URL=${own.url}`], { cwd: dir, env }));
      await test(own);
    } finally {
      await own.close();
    }
  };

  beforeAll(async () => {
    receiver = await startReceiver((text) => text);
    reported = receiver.received;
    server = await startTestServer({ runTimeout: "2s", webhookRetryDelays: "100ms,100ms,100ms", webhookRate: "120,240", webhookMaxQueued: "15,1000" });
    tmp = tempDir("wy-webhooks-burst-");
    dir = writeProject(path.join(tmp.dir, "w"), fixtureDeps(), SOURCE);
    env = cliEnv(server, path.join(tmp.dir, "home"));
    ok(await ntn(["workers", "deploy", "--name", "burst"], { cwd: dir, env, timeoutMs: 180_000 }));
    hold = await startHold();
    ok(await ntn(["workers", "env", "set", `RECEIVER_URL=${receiver.url}`, `HOLD_URL=${hold.url}`], { cwd: dir, env }));
    const listed = JSON.parse(ok(await ntn(["workers", "webhooks", "list", "--json"], { cwd: dir, env })).stdout) as { key: string; url: string }[];
    urls = Object.fromEntries(listed.map((w) => [w.key, w.url]));
  });
  afterAll(async () => {
    await server?.stop();
    await receiver?.close();
    await hold?.close();
    tmp?.cleanup();
  });

  it("runs a delivery whose body is near the 1 MiB limit (the event carries it twice: body and rawBody)", async () => {
    const body = JSON.stringify({ blob: "x".repeat(900 * 1024) });
    const answer = await fetch(urls.count!, { method: "POST", body, headers: { "content-type": "application/json" } });
    expect(answer.status).toBe(202);
    const { deliveryId } = (await answer.json()) as { deliveryId: string };
    await until("the large delivery", () => reported.includes(deliveryId), 30_000);
  });

  it("stops a run that never ends at the time limit, retries it 3 times with the same delivery id, then fails it", async () => {
    const answer = await fetch(urls.loops!, { method: "POST", body: "{}" });
    expect(answer.status).toBe(202);
    const { deliveryId } = (await answer.json()) as { deliveryId: string };
    await until("the delivery to fail", async () => (await deliveriesOf("loops")).find((d) => d.deliveryId === deliveryId)?.status === "failed", 60_000);
    const delivery = (await deliveriesOf("loops")).find((d) => d.deliveryId === deliveryId)!;
    expect(delivery.attempts).toBe(4);
    expect(new Set(delivery.runIds).size).toBe(4);
    expect(delivery.error).toMatch(/time limit/i);
    const runs = (await server.call("ListRunsForWorker", { workerId: JSON.parse(ok(await ntn(["workers", "get", "--json"], { cwd: dir, env })).stdout).workerId })).body.runs as {
      runId: string;
      exitCode: number;
    }[];
    for (const runId of delivery.runIds) expect(runs.find((r) => r.runId === runId)?.exitCode).toBe(124);
  }, 90_000);

  it("a delivery whose run ends only because a run beside it hit its time limit is tried again without using up an attempt", async () => {
    await withOwnHold(async (second) => {
      const hanging = await accept("hangs");
      await until("the hanging run to start", () => reported.includes(`hangs:${hanging}`), 30_000);
      // Three runs in the same process, waiting, when the hanging run reaches its time limit (2 s),
      // far from their own (they start a second later).
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const beside = [await accept("waits"), await accept("waits"), await accept("waits")];
      await until("the three runs to wait", () => second.waiting() >= 3, 10_000);
      // Their requests close when the process stops; let go at once, their next runs end quickly.
      await until("their process to be stopped", () => second.waiting() === 0, 20_000);
      second.release();
      await until("the three deliveries to succeed", async () => (await deliveriesOf("waits")).filter((d) => beside.includes(d.deliveryId) && d.status === "succeeded").length === 3, 30_000);
      for (const delivery of (await deliveriesOf("waits")).filter((d) => beside.includes(d.deliveryId))) {
        // The run stopped with its process, then the run that succeeded; one attempt counted.
        expect(delivery.runIds.length).toBeGreaterThanOrEqual(2);
        expect(delivery.attempts).toBe(1);
      }
      // The hanging delivery uses up its own attempts.
      await until("the hanging delivery to fail", async () => (await deliveryOf("hangs", hanging))?.status === "failed", 60_000);
      expect((await deliveryOf("hangs", hanging))?.attempts).toBe(4);
    });
  }, 120_000);

  it("a run that spins holds every run beside it: each of them counts its attempt, the spinning one too", async () => {
    await withOwnHold(async (third) => {
      const waiting = await accept("waits");
      await until("the waiting run", () => third.waiting() === 1, 10_000);
      // Shares the waiting run's process and spins: the waiting run's limit passes first, in a
      // process that stopped answering. Which run held it is not known: neither is spared. (It
      // starts late enough that its own limit is still ahead when the process stops.)
      await new Promise((resolve) => setTimeout(resolve, 700));
      const spinning = await accept("loops");
      await until("the waiting run's process to be stopped", () => third.waiting() === 0, 20_000);
      third.release();
      await until("the spinning delivery to fail", async () => (await deliveryOf("loops", spinning))?.status === "failed", 60_000);
      const spun = (await deliveryOf("loops", spinning))!;
      expect({ attempts: spun.attempts, runs: spun.runIds.length }).toEqual({ attempts: 4, runs: 4 });
      // Its first run did share the waiting run's process, and ended with it.
      const workerId = JSON.parse(ok(await ntn(["workers", "get", "--json"], { cwd: dir, env })).stdout).workerId as string;
      const runs = (await server.call("ListRunsForWorker", { workerId })).body.runs as { runId: string; error: string | null }[];
      expect(runs.find((r) => r.runId === spun.runIds[0])?.error).toMatch(/another run's time limit/);
      await until("the waiting delivery to succeed", async () => (await deliveryOf("waits", waiting))?.status === "succeeded", 30_000);
      const waited = (await deliveryOf("waits", waiting))!;
      expect(waited.attempts).toBe(waited.runIds.length);
    });
  }, 120_000);

  it("bounds the queue per workspace: a workspace whose deliveries pile up gets 503, another workspace's are still taken", async () => {
    const post = (url: string) => fetch(url, { method: "POST", body: "{}", headers: { "content-type": "application/json" } });
    // The other workspace's worker first: its deploy takes a while, and the held runs are stopped at
    // the run time limit (2 s here), so the first workspace's queue is filled just before it is used.
    const team = await server.call("CreateWorkspace", { name: "Team B" });
    expect(team.status).toBe(200);
    const otherDir = writeProject(path.join(tmp.dir, "other"), fixtureDeps(), SOURCE);
    const otherEnv = { ...cliEnv(server, path.join(tmp.dir, "home-b")), NOTION_API_TOKEN: team.body.token as string, NOTION_WORKSPACE_ID: team.body.workspaceId as string };
    ok(await ntn(["workers", "deploy", "--name", "burst-b"], { cwd: otherDir, env: otherEnv, timeoutMs: 180_000 }));
    ok(await ntn(["workers", "env", "set", `RECEIVER_URL=${receiver.url}`], { cwd: otherDir, env: otherEnv }));
    const otherUrls = JSON.parse(ok(await ntn(["workers", "webhooks", "list", "--json"], { cwd: otherDir, env: otherEnv })).stdout) as { key: string; url: string }[];

    const statuses: number[] = [];
    const accepted: string[] = [];
    for (let i = 0; i < 20; i++) {
      const answer = await post(urls.held!);
      statuses.push(answer.status);
      if (answer.status === 202) accepted.push(((await answer.json()) as { deliveryId: string }).deliveryId);
      else {
        expect(Number(answer.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
        await answer.arrayBuffer();
      }
    }
    // 15 waiting (held runs count as waiting until they finish), then 503.
    expect(accepted).toHaveLength(15);
    expect(statuses.slice(15)).toEqual([503, 503, 503, 503, 503]);

    const other = await post(otherUrls.find((w) => w.key === "count")!.url);
    expect(other.status).toBe(202);
    const { deliveryId } = (await other.json()) as { deliveryId: string };
    // It runs, too, once a slot is free: the held runs take every slot of this process until let go
    // (or until their time limit; they are retried, and run to the end once let go).
    hold.release();
    await until("the other workspace's delivery and every held one", () => [deliveryId, ...accepted].every((id) => reported.includes(id)), 60_000);
  }, 240_000);

  it("answers a burst past the rate with 429 and past the queue's bound with 503, both with Retry-After; every 202 runs", async () => {
    const statuses = new Map<number, number>();
    const accepted: string[] = [];
    const retryAfters = new Set<string | null>();
    let next = 0;
    // 1,000 requests, 50 at a time.
    await Promise.all(
      Array.from({ length: 50 }, async () => {
        while (next < 1000) {
          next += 1;
          const answer = await fetch(urls.count!, { method: "POST", body: JSON.stringify({ n: next }), headers: { "content-type": "application/json" } });
          statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
          if (answer.status === 202) accepted.push(((await answer.json()) as { deliveryId: string }).deliveryId);
          else {
            retryAfters.add(answer.headers.get("retry-after"));
            await answer.arrayBuffer();
          }
        }
      }),
    );
    expect([...statuses.keys()].sort()).toEqual([202, 429, 503]);
    expect(statuses.get(429)).toBeGreaterThan(700);
    expect([...retryAfters].every((value) => Number(value) >= 1)).toBe(true);
    // The bucket holds 120, refilled at 2 a second while the burst lasts.
    expect(accepted.length).toBeLessThanOrEqual(140);
    await until("every accepted delivery", () => accepted.every((id) => reported.includes(id)), 60_000);
  }, 120_000);
});

/** A URL whose requests wait until `release()`; those that come after are answered at once. */
async function startHold() {
  const waiting: http.ServerResponse[] = [];
  let released = false;
  const server = http.createServer((request, response) => {
    request.resume();
    if (released) return response.end("go");
    waiting.push(response);
    // A request whose run's process stopped is no longer waiting.
    response.on("close", () => waiting.splice(waiting.indexOf(response) >>> 0, waiting.includes(response) ? 1 : 0));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    /** Requests waiting to be let go. */
    waiting: () => waiting.length,
    release() {
      released = true;
      for (const response of waiting.splice(0)) response.end("go");
    },
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
