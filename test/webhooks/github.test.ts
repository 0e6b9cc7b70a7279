/**
 * Issue 15: a webhook capability receives events from a real kind of sender. The test signs
 * payloads as GitHub does (X-Hub-Signature-256, HMAC-SHA256 with a secret set by `env set`); the
 * worker, on the published SDK, checks the signature against `rawBody` and throws
 * WebhookVerificationError on a bad one. What the worker received it reports to a receiver on
 * 127.0.0.1, which is how the test sees each run.
 */
import crypto from "node:crypto";
import http from "node:http";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliEnv, fixtureDeps, workerIdOf, writeProject } from "../build-run/fixtures.js";
import { until } from "../helpers/cluster.js";
import { startReceiver } from "../helpers/receiver.js";
import { ntn, officialNtn, ok } from "../helpers/run-ntn.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { tempDir } from "../helpers/tmp.js";

const SOURCE = `import crypto from "node:crypto";
import { Worker, WebhookVerificationError } from "@notionhq/workers";
const worker = new Worker();
export default worker;

async function report(what) {
  const answer = await fetch(process.env.RECEIVER_URL, { method: "POST", body: JSON.stringify(what) });
  return answer.status;
}

worker.webhook("onPush", {
  title: "GitHub push",
  description: "Checks GitHub's signature, then reports the event",
  execute: async (events) => {
    for (const event of events) {
      const expected = "sha256=" + crypto.createHmac("sha256", process.env.GITHUB_WEBHOOK_SECRET).update(event.rawBody).digest("hex");
      const given = event.headers["x-hub-signature-256"] ?? "";
      if (given.length !== expected.length || !crypto.timingSafeEqual(Buffer.from(given), Buffer.from(expected))) {
        throw new WebhookVerificationError("Invalid GitHub signature");
      }
      await report({ key: "onPush", event });
    }
  },
});

worker.webhook("flaky", {
  title: "Flaky",
  description: "Fails while the receiver says so",
  execute: async (events) => {
    for (const event of events) {
      if ((await report({ key: "flaky", event })) !== 200) throw new Error("the receiver is not ready");
    }
  },
});
`;

const SIGNING_SECRET = `whsec-${crypto.randomBytes(8).toString("hex")}`;
const sign = (body: string) => `sha256=${crypto.createHmac("sha256", SIGNING_SECRET).update(body).digest("hex")}`;

interface Reported {
  key: string;
  event: { deliveryId: string; body: Record<string, unknown>; rawBody: string; headers: Record<string, string>; method: string };
}

describe("webhooks from a GitHub-style sender", () => {
  let server: TestServer;
  let tmp: { dir: string; cleanup(): void };
  let dir: string;
  let env: Record<string, string | undefined>;
  let receiver: Awaited<ReturnType<typeof startReceiver<Reported>>>;
  let reported: Reported[] = [];
  /** The flaky webhook's receiver answers 500 to this many of its calls first. */
  let flakyFailures = 0;
  let deployOutput = "";
  let urls: Record<string, string> = {};

  const post = (url: string, body: string | Buffer, headers: Record<string, string> = {}, method = "POST") =>
    fetch(url, { method, body: method === "GET" || method === "HEAD" ? undefined : body, headers: { "content-type": "application/json", ...headers } });
  /** The worker's report of a delivery, once it came. */
  const reportOf = async (deliveryId: string) => {
    await until("the worker's report", () => reported.some((r) => r.event.deliveryId === deliveryId), 20_000);
    return reported.find((r) => r.event.deliveryId === deliveryId)!;
  };
  const runsOf = async (key: string) => ((await server.call("ListRunsForWorker", { workerId: workerIdOf(dir) })).body.runs as { name: string; status: string }[]).filter((r) => r.name === key);

  beforeAll(async () => {
    receiver = await startReceiver(
      (text) => JSON.parse(text) as Reported,
      (what) => {
        if (what.key !== "flaky" || flakyFailures === 0) return 200;
        flakyFailures -= 1;
        return 500;
      },
    );
    reported = receiver.received;
    server = await startTestServer({ webhookRetryDelays: "100ms,100ms,100ms", webhookBodyLimit: 64 * 1024 });
    tmp = tempDir("wy-webhooks-");
    dir = writeProject(path.join(tmp.dir, "w"), fixtureDeps(), SOURCE);
    env = cliEnv(server, path.join(tmp.dir, "home"));
    const first = ok(await ntn(["workers", "deploy", "--name", "hooks"], { cwd: dir, env, timeoutMs: 180_000 }));
    ok(await ntn(["workers", "env", "set", `GITHUB_WEBHOOK_SECRET=${SIGNING_SECRET}`, `RECEIVER_URL=${receiver.url}`], { cwd: dir, env }));
    deployOutput = first.stdout + first.stderr;
    const listed = ok(await ntn(["workers", "webhooks", "list", "--json"], { cwd: dir, env }));
    urls = Object.fromEntries((JSON.parse(listed.stdout) as { key: string; url: string }[]).map((w) => [w.key, w.url]));
  });
  afterAll(async () => {
    await server?.stop();
    await receiver?.close();
    tmp?.cleanup();
  });

  it("gives each webhook capability a URL with a secret id, printed by deploy and by webhooks list", async () => {
    expect(Object.keys(urls).sort()).toEqual(["flaky", "onPush"]);
    const pattern = new RegExp(`^${server.url}/webhooks/worker/${server.workspaceId}/${workerIdOf(dir)}/([A-Za-z0-9_-]{32,})/onPush$`);
    expect(urls.onPush).toMatch(pattern);
    expect(deployOutput).toContain(urls.onPush);
    expect(deployOutput).toContain(urls.flaky);
    const plain = ok(await ntn(["workers", "webhooks", "list"], { cwd: dir, env }));
    expect(plain.stdout).toMatch(/onPush\s+\S+\s+active\s+none/);
    // A copy of the database holds no URL: the secret id is sealed, and only its hash is in clear.
    const rows = await server.server.store.db.selectFrom("webhooks").selectAll().execute();
    const secretId = pattern.exec(urls.onPush!)![1]!;
    expect(JSON.stringify(rows.map((r) => ({ ...r, secret_sealed: r.secret_sealed.toString("latin1") })))).not.toContain(secretId);
  });

  it("accepts a signed delivery with 202 and a delivery id, then runs the worker with the event as the SDK describes it", async () => {
    const body = JSON.stringify({ ref: "refs/heads/main", repository: { full_name: "octo/hello" } });
    const answer = await post(urls.onPush!, body, { "X-Hub-Signature-256": sign(body), "X-GitHub-Event": "push", "X-GitHub-Delivery": "gh-1" });
    expect(answer.status).toBe(202);
    const { deliveryId } = (await answer.json()) as { deliveryId: string };
    expect(deliveryId).toMatch(/^[0-9a-f-]{36}$/);
    const got = await reportOf(deliveryId);
    expect(got.event).toMatchObject({ deliveryId, method: "POST", rawBody: body, body: { ref: "refs/heads/main", repository: { full_name: "octo/hello" } } });
    expect(got.event.headers).toMatchObject({ "x-github-event": "push", "x-github-delivery": "gh-1", "content-type": "application/json" });
    // The worker reports from inside its run: the delivery ends a moment later.
    const lastStatus = async () =>
      (JSON.parse(ok(await ntn(["workers", "webhooks", "list", "--json"], { cwd: dir, env })).stdout) as { key: string; lastDelivery: { status: string } | null }[]).find((w) => w.key === "onPush")?.lastDelivery?.status;
    await until("the delivery's end", async () => (await lastStatus()) !== "running", 10_000);
    expect(await lastStatus()).toBe("succeeded");
    // The run is recorded with the delivery it attempted.
    const runs = (await server.call("ListRunsForWorker", { workerId: workerIdOf(dir) })).body.runs as { name: string; deliveryId?: string; status: string }[];
    expect(runs.find((r) => r.deliveryId === deliveryId)).toMatchObject({ name: "onPush", status: "succeeded" });
  });

  it("passes a body that is not JSON as rawBody, with body {}", async () => {
    const body = "payload=not%20json";
    const answer = await post(urls.onPush!, body, { "X-Hub-Signature-256": sign(body), "content-type": "application/x-www-form-urlencoded" });
    expect(answer.status).toBe(202);
    const { deliveryId } = (await answer.json()) as { deliveryId: string };
    const got = await reportOf(deliveryId);
    expect(got.event.body).toEqual({});
    expect(got.event.rawBody).toBe(body);
  });

  it("takes a binary body and many headers; a header block over Node's limit is refused (431)", async () => {
    const bytes = Buffer.from([0xff, 0xfe, 0x00, 0x01, 0x80, 0x7f]);
    const headers: Record<string, string> = { "content-type": "application/octet-stream", "X-Hub-Signature-256": sign(bytes.toString("utf8")) };
    for (let i = 0; i < 100; i++) headers[`x-extra-${i}`] = "v".repeat(50);
    const answer = await post(urls.onPush!, bytes, headers);
    expect(answer.status).toBe(202);
    const { deliveryId } = (await answer.json()) as { deliveryId: string };
    const got = await reportOf(deliveryId);
    expect(got.event.body).toEqual({});
    expect(got.event.rawBody).toBe(bytes.toString("utf8"));
    expect(got.event.headers["x-extra-99"]).toBe("v".repeat(50));
    expect((await post(urls.onPush!, "{}", { "x-huge": "h".repeat(20 * 1024) })).status).toBe(431);
  });

  it("takes a malformed Content-Type as it came, and gives it to the worker", async () => {
    const body = JSON.stringify({ odd: "content-type" });
    const raw = await rawRequest("POST", urls.onPush!, body, { "content-type": "json;;;", "x-hub-signature-256": sign(body) });
    expect(raw.status).toBe(202);
    const { deliveryId } = JSON.parse(raw.body) as { deliveryId: string };
    const got = await reportOf(deliveryId);
    expect(got.event.headers["content-type"]).toBe("json;;;");
    expect(got.event.body).toEqual({ odd: "content-type" });
  });

  it("retries a failed run with the same delivery id, up to 3 times", async () => {
    flakyFailures = 2;
    const answer = await post(urls.flaky!, JSON.stringify({ n: 1 }));
    expect(answer.status).toBe(202);
    const { deliveryId } = (await answer.json()) as { deliveryId: string };
    await until("three attempts", () => reported.filter((r) => r.event.deliveryId === deliveryId).length === 3, 20_000);
    expect(new Set(reported.filter((r) => r.event.deliveryId === deliveryId).map((r) => r.key))).toEqual(new Set(["flaky"]));
    // Three runs: two failed, the last one succeeded (recorded once it ends, just after it reported).
    const statuses = async () => (await runsOf("flaky")).map((r) => r.status).sort();
    await until("the third run's end", async () => (await statuses()).length === 3 && !(await statuses()).includes("running"), 10_000);
    expect(await statuses()).toEqual(["failed", "failed", "succeeded"]);
  });

  it("refuses what is not a delivery: a wrong secret or key (404, one answer), GET (405), a body over the limit (413)", async () => {
    const wrongSecret = urls.onPush!.replace(/\/([A-Za-z0-9_-]{32,})\/onPush$/, `/${"A".repeat(32)}/onPush`);
    const wrongKey = urls.onPush!.replace(/\/onPush$/, "/nothing");
    const otherWorker = urls.onPush!.replace(workerIdOf(dir), crypto.randomUUID());
    const answers = await Promise.all([post(wrongSecret, "{}"), post(wrongKey, "{}"), post(otherWorker, "{}")]);
    expect(answers.map((a) => a.status)).toEqual([404, 404, 404]);
    const bodies = await Promise.all(answers.map((a) => a.text()));
    expect(new Set(bodies).size).toBe(1);
    expect((await post(urls.onPush!, "", {}, "GET")).status).toBe(405);
    // Methods fetch will not send, and a path too short to be a webhook's: no secret echoed back.
    for (const [method, url] of [["TRACE", urls.onPush!], ["PROPFIND", urls.onPush!], ["POST", urls.onPush!.replace(/\/onPush$/, "")]] as const) {
      const raw = await rawRequest(method, url, "", {});
      expect(raw.status).toBe(method === "POST" ? 404 : 405);
      expect(raw.body).not.toContain(urls.onPush!.split("/").at(-2)!);
    }
    const before = await server.server.store.db.selectFrom("webhook_deliveries").select("id").execute();
    expect((await post(urls.onPush!, "x".repeat(65 * 1024))).status).toBe(413);
    const after = await server.server.store.db.selectFrom("webhook_deliveries").select("id").execute();
    expect(after.length).toBe(before.length);
  });

  it("answers a body streamed past the limit 413 as it arrives, then cuts the connection instead of reading it all", async () => {
    // Node reads and drops the rest of a body answered early, however long: 64 MiB here.
    const declared = 64 * 1024 * 1024;
    const target = new URL(urls.onPush!);
    const outcome = await new Promise<{ status: number | undefined; written: number }>((resolve) => {
      let status: number | undefined;
      let written = 0;
      let done = false;
      const req = http.request({ host: target.hostname, port: target.port, path: target.pathname, method: "POST", headers: { "content-length": String(declared) } });
      req.on("response", (res) => {
        status = res.statusCode;
        res.resume();
      });
      req.on("error", () => (done = true));
      req.on("close", () => (done = true));
      void (async () => {
        const piece = Buffer.alloc(256 * 1024, 0x78);
        while (!done && written < declared) {
          written += piece.length;
          if (!req.write(piece)) {
            await new Promise<void>((next) => {
              const go = () => {
                req.off("drain", go);
                req.off("close", go);
                next();
              };
              req.on("drain", go);
              req.on("close", go);
            });
          }
        }
        if (!done) req.end();
        await until("the connection's end", async () => done, 30_000);
        resolve({ status, written });
      })();
    });
    expect(outcome.status).toBe(413);
    expect(outcome.written).toBeLessThan(declared / 2);
  });

  it("never retries a bad signature, and blocks the webhook after 5 in a row (403) until a redeploy", async () => {
    const runsBefore = (await runsOf("onPush")).length;
    for (let i = 0; i < 5; i++) {
      const answer = await post(urls.onPush!, JSON.stringify({ i }), { "X-Hub-Signature-256": sign("something else") });
      expect(answer.status).toBe(202);
    }
    await until("five runs", async () => (await runsOf("onPush")).length === runsBefore + 5, 30_000);
    // Each failure is counted once its delivery is finished, a moment after its run is listed.
    const statusOf = async () =>
      ((await server.call("ListWebhooks", { workerId: workerIdOf(dir) })).body.webhooks as { key: string; status: string }[]).find((w) => w.key === "onPush")?.status;
    await until("the block", async () => (await statusOf()) === "blocked", 10_000);
    expect((await post(urls.onPush!, "{}", { "X-Hub-Signature-256": sign("{}") })).status).toBe(403);
    // Each bad delivery ran once: no retries.
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect((await runsOf("onPush")).length).toBe(runsBefore + 5);
    const listed = ok(await ntn(["workers", "webhooks", "list"], { cwd: dir, env }));
    expect(listed.stdout).toMatch(/onPush\s+\S+\s+blocked \(5 failed verifications in a row\)/);
    // A redeploy unblocks it, under the same URL.
    ok(await ntn(["workers", "deploy"], { cwd: dir, env, timeoutMs: 180_000 }));
    const body = JSON.stringify({ after: "redeploy" });
    expect((await post(urls.onPush!, body, { "X-Hub-Signature-256": sign(body) })).status).toBe(202);
  });

  it("answers 404 on the URL of a deleted worker", async () => {
    const other = writeProject(path.join(tmp.dir, "doomed"), fixtureDeps(), SOURCE);
    ok(await ntn(["workers", "deploy", "--name", "doomed"], { cwd: other, env, timeoutMs: 180_000 }));
    const url = (JSON.parse(ok(await ntn(["workers", "webhooks", "list", "--json"], { cwd: other, env })).stdout) as { key: string; url: string }[]).find((w) => w.key === "flaky")!.url;
    expect((await post(url, "{}")).status).toBe(202);
    ok(await ntn(["workers", "delete", "--yes"], { cwd: other, env }));
    expect((await post(url, "{}")).status).toBe(404);
  });

  it("runs a webhook capability with exec and an array of events; an object is refused plainly", async () => {
    const event = { deliveryId: "exec-1", body: { via: "exec" }, rawBody: "{}", headers: {}, method: "POST" };
    const good = ok(await ntn(["workers", "exec", "flaky", "-d", JSON.stringify([event])], { cwd: dir, env }));
    expect(good.code).toBe(0);
    expect(reported.some((r) => r.event.deliveryId === "exec-1")).toBe(true);
    const bad = await ntn(["workers", "exec", "flaky", "-d", JSON.stringify(event)], { cwd: dir, env });
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain("A webhook capability takes an array of events, not an object.");
  });

  it("runs it with the official ntn 0.4.0's exec too (it has no webhook commands), and refuses an object the same way", async () => {
    const event = { deliveryId: "official-1", body: { via: "official" }, rawBody: "{}", headers: {}, method: "POST" };
    const good = await officialNtn(["workers", "exec", "flaky", "-d", JSON.stringify([event])], { cwd: dir, env });
    expect(good.code, good.stderr).toBe(0);
    expect(reported.some((r) => r.event.deliveryId === "official-1")).toBe(true);
    const bad = await officialNtn(["workers", "exec", "flaky", "-d", JSON.stringify(event)], { cwd: dir, env });
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain("A webhook capability takes an array of events, not an object.");
  });
});


/** A request fetch would refuse to make (TRACE, a malformed Content-Type). */
function rawRequest(method: string, url: string, body: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request(url, { method, headers }, (response) => {
      let text = "";
      response.on("data", (chunk: Buffer) => (text += chunk.toString("utf8")));
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body: text }));
    });
    request.on("error", reject);
    request.end(body);
  });
}
