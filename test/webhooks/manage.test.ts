/**
 * Issue 15: a webhook's `verify` handler inline (its answer goes back to the sender), the
 * management commands (deliveries, redeliver, rotate, unblock, verification on and off), the
 * ingress rate limits and the retention of deliveries, through our CLI and plain HTTP.
 */
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Maintenance } from "../../packages/server/src/maintenance.js";
import { cliEnv, fixtureDeps, writeProject } from "../build-run/fixtures.js";
import { until } from "../helpers/cluster.js";
import { startReceiver } from "../helpers/receiver.js";
import { ntn, ok } from "../helpers/run-ntn.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { tempDir } from "../helpers/tmp.js";

const SOURCE = `import { Worker, WebhookVerificationError } from "@notionhq/workers";
const worker = new Worker();
export default worker;

async function report(what) {
  await fetch(process.env.RECEIVER_URL, { method: "POST", body: JSON.stringify(what) });
}

worker.webhook("checked", {
  title: "Checked",
  description: "A verify handler that answers as the request asks",
  verify: async (request) => {
    if (request.method === "GET") return { status: 200, body: request.query.challenge ?? "" };
    const mode = request.headers["x-mode"];
    if (mode === "reject") return { status: 403, body: "not for us" };
    if (mode === "throw") throw new Error("verify blew up");
    if (mode === "slow") await new Promise((resolve) => setTimeout(resolve, 20000));
    if (mode === "invalid") return { status: 302, body: "elsewhere" };
    return { status: 200, body: JSON.stringify({ ok: true, bytes: request.rawBody.length }), contentType: "application/json" };
  },
  execute: async (events) => {
    for (const event of events) await report({ key: "checked", deliveryId: event.deliveryId, body: event.body });
  },
});

worker.webhook("strict", {
  title: "Strict",
  description: "Fails verification unless told otherwise",
  execute: async (events) => {
    for (const event of events) {
      if (event.headers["x-valid"] !== "yes") throw new WebhookVerificationError("bad signature");
      await report({ key: "strict", deliveryId: event.deliveryId, body: event.body });
    }
  },
});
`;


describe("webhook verification, management and limits", () => {
  let server: TestServer;
  let tmp: { dir: string; cleanup(): void };
  let dir: string;
  let env: Record<string, string | undefined>;
  let receiver: Awaited<ReturnType<typeof startReceiver<{ key: string; deliveryId: string; body: Record<string, unknown> }>>>;
  let reported: { key: string; deliveryId: string; body: Record<string, unknown> }[] = [];
  let urls: Record<string, string> = {};

  const cli = (...argv: string[]) => ntn(argv, { cwd: dir, env });
  const send = (url: string, body: string, headers: Record<string, string> = {}, method = "POST") =>
    fetch(url, { method, body: method === "POST" ? body : undefined, headers: { "content-type": "application/json", ...headers } });
  const deliveriesOf = async (key: string) =>
    JSON.parse(ok(await cli("workers", "webhooks", "deliveries", key, "--json")).stdout) as { deliveryId: string; status: string; attempts: number; runIds: string[] }[];
  const listed = async () => JSON.parse(ok(await cli("workers", "webhooks", "list", "--json")).stdout) as { key: string; url: string; status: string; verificationFailures: number }[];

  beforeAll(async () => {
    receiver = await startReceiver((text) => JSON.parse(text) as { key: string; deliveryId: string; body: Record<string, unknown> });
    reported = receiver.received;
    // A low rate for the limit's test: 30 a minute per worker, 40 per workspace.
    server = await startTestServer({ webhookRetryDelays: "100ms,100ms,100ms", webhookRate: "30,40" });
    tmp = tempDir("wy-webhooks-manage-");
    dir = writeProject(path.join(tmp.dir, "w"), fixtureDeps(), SOURCE);
    env = cliEnv(server, path.join(tmp.dir, "home"));
    ok(await ntn(["workers", "deploy", "--name", "manage"], { cwd: dir, env, timeoutMs: 180_000 }));
    ok(await cli("workers", "env", "set", `RECEIVER_URL=${receiver.url}`));
    urls = Object.fromEntries((await listed()).map((w) => [w.key, w.url]));
  });
  afterAll(async () => {
    await server?.stop();
    await receiver?.close();
    tmp?.cleanup();
  });

  it("runs verify inline: its 2xx answer goes to the sender and the delivery runs", async () => {
    const answer = await send(urls.checked!, JSON.stringify({ hello: "world" }));
    expect(answer.status).toBe(200);
    expect(answer.headers.get("content-type")).toMatch(/^application\/json/);
    expect(await answer.json()).toEqual({ ok: true, bytes: 17 });
    await until("the delivery", () => reported.some((r) => r.key === "checked" && r.body.hello === "world"), 20_000);
  });

  it("answers a 4xx from verify to the sender and stores nothing; a throw is 400, an invalid answer 400, over budget 503", async () => {
    const before = (await deliveriesOf("checked")).length;
    const rejected = await send(urls.checked!, "{}", { "x-mode": "reject" });
    expect(rejected.status).toBe(403);
    expect(await rejected.text()).toBe("not for us");
    const thrown = await send(urls.checked!, "{}", { "x-mode": "throw" });
    expect(thrown.status).toBe(400);
    expect(await thrown.text()).not.toContain("blew up");
    expect((await send(urls.checked!, "{}", { "x-mode": "invalid" })).status).toBe(400);
    const started = Date.now();
    const slow = await send(urls.checked!, "{}", { "x-mode": "slow" });
    expect(slow.status).toBe(503);
    expect(slow.headers.get("retry-after")).toBeTruthy();
    expect(Date.now() - started).toBeLessThan(15_000);
    expect((await deliveriesOf("checked")).length).toBe(before);
  });

  it("answers a GET probe through verify (a challenge), and 405 once verification is off", async () => {
    const probe = await fetch(`${urls.checked!}?challenge=abc123`);
    expect(probe.status).toBe(200);
    expect(await probe.text()).toBe("abc123");
    ok(await cli("workers", "webhooks", "verification", "disable", "checked"));
    expect((await listed()).find((w) => w.key === "checked")?.status).toBe("verification off");
    expect((await fetch(`${urls.checked!}?challenge=abc123`)).status).toBe(405);
    // Without verify, a POST is accepted as it is: 202, whatever verify would have said.
    expect((await send(urls.checked!, "{}", { "x-mode": "reject" })).status).toBe(202);
    ok(await cli("workers", "webhooks", "verification", "enable", "checked"));
    expect((await listed()).find((w) => w.key === "checked")?.status).toBe("active");
  });

  it("lists deliveries, unblocks a blocked webhook, and redelivers with the same delivery id", async () => {
    for (let i = 0; i < 5; i++) expect((await send(urls.strict!, JSON.stringify({ i }))).status).toBe(202);
    await until("the block", async () => (await listed()).find((w) => w.key === "strict")?.status === "blocked", 20_000);
    expect((await send(urls.strict!, "{}", { "x-valid": "yes" })).status).toBe(403);
    const failed = await deliveriesOf("strict");
    expect(failed).toHaveLength(5);
    expect(failed.every((d) => d.status === "verification_failed" && d.attempts === 1 && d.runIds.length === 1)).toBe(true);
    const plain = ok(await cli("workers", "webhooks", "deliveries", "strict"));
    expect(plain.stdout).toMatch(/^DELIVERY ID\s+STATUS\s+ATTEMPTS/m);

    ok(await cli("workers", "webhooks", "unblock", "strict"));
    expect((await listed()).find((w) => w.key === "strict")).toMatchObject({ status: "active", verificationFailures: 0 });
    const good = await send(urls.strict!, JSON.stringify({ good: true }), { "x-valid": "yes" });
    expect(good.status).toBe(202);
    const { deliveryId } = (await good.json()) as { deliveryId: string };
    await until("the good delivery", () => reported.some((r) => r.deliveryId === deliveryId), 20_000);
    // The worker reports from inside its run: the delivery ends a moment later.
    await until("its end", async () => (await deliveriesOf("strict")).find((d) => d.deliveryId === deliveryId)?.status === "succeeded", 10_000);

    // Redelivered: the same delivery id reaches the worker a second time, a second run is recorded.
    ok(await cli("workers", "webhooks", "redeliver", deliveryId));
    await until("the redelivery", () => reported.filter((r) => r.deliveryId === deliveryId).length === 2, 20_000);
    await until("its second run", async () => (await deliveriesOf("strict")).find((d) => d.deliveryId === deliveryId)?.runIds.length === 2, 10_000);
    const missing = await cli("workers", "webhooks", "redeliver", "00000000-0000-0000-0000-000000000000");
    expect(missing.code).toBe(5);
    expect(missing.stderr).toContain("No delivery");
  });

  it("rotates a URL: the old one answers 404, the new one takes deliveries", async () => {
    const old = urls.strict!;
    const rotated = ok(await cli("workers", "webhooks", "rotate", "strict", "--yes"));
    const fresh = rotated.stdout.trim();
    expect(fresh).not.toBe(old);
    expect(fresh).toMatch(/\/strict$/);
    expect((await send(old, "{}", { "x-valid": "yes" })).status).toBe(404);
    expect((await send(fresh, "{}", { "x-valid": "yes" })).status).toBe(202);
    expect((await listed()).find((w) => w.key === "strict")?.url).toBe(fresh);
    urls.strict = fresh;
  });

  it("limits the ingress per worker: 429 with Retry-After and nothing stored past the limit", async () => {
    const before = (await deliveriesOf("strict")).length;
    const statuses: number[] = [];
    let retryAfter: string | null = null;
    const started = Date.now();
    for (let i = 0; i < 40; i++) {
      const answer = await send(urls.strict!, JSON.stringify({ burst: i }), { "x-valid": "yes" });
      statuses.push(answer.status);
      if (answer.status === 429) {
        retryAfter = answer.headers.get("retry-after");
        expect(await answer.json()).toEqual({ error: "Rate limit exceeded" });
      }
    }
    const accepted = statuses.filter((s) => s === 202).length;
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThan(0);
    // 30 a minute per worker: the burst, plus what refilled while the 40 requests went (one every 2 s).
    expect(accepted).toBeLessThanOrEqual(30 + Math.floor((Date.now() - started) / 2000));
    expect(Number(retryAfter)).toBeGreaterThanOrEqual(1);
    await until("the accepted deliveries", async () => (await deliveriesOf("strict")).length >= before + accepted, 10_000);
    expect((await deliveriesOf("strict")).length).toBe(before + accepted);
  });

  it("deletes finished deliveries (their sealed requests) after the retention, never one still to run", async () => {
    const { config, store, log } = server.server;
    const sweep = (webhookRetentionMs: number) =>
      new Maintenance({
        db: store.db,
        dataDir: config.dataDir,
        runTimeoutMs: config.runTimeoutMs,
        soleServer: false,
        runRetentionMs: config.runRetentionMs,
        deploymentsKept: config.deploymentsKept,
        webhookRetentionMs,
        workerProcesses: { workerIds: () => [], retireWorker: () => {} },
        log,
      }).sweep(false);
    expect((await sweep(7 * 24 * 3600 * 1000)).deliveries).toBe(0);
    await until("every delivery to finish", async () => (await deliveriesOf("strict")).every((d) => d.status !== "queued" && d.status !== "running"), 20_000);
    const waiting = await store.db.selectFrom("webhook_deliveries").select("id").where("status", "in", ["queued", "running"]).execute();
    const report = await sweep(1);
    expect(report.deliveries).toBeGreaterThan(0);
    const left = await store.db.selectFrom("webhook_deliveries").select(["id", "status"]).execute();
    expect(left.every((d) => d.status === "queued" || d.status === "running")).toBe(true);
    expect(left.length).toBe(waiting.length);
  });
});
