import crypto from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliEnv, fixtureDeps, workerIdOf, writeProject } from "../build-run/fixtures.js";
import { DIALECTS } from "../helpers/dialects.js";
import { ntn } from "../helpers/run-ntn.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { tempDir } from "../helpers/tmp.js";
import { errorShapeProblem, holdRequest, pool, rawRequest, waitFor, type HeldRequest, type RawAnswer } from "./http.js";

/**
 * Overload is answered, never suffered: past its limits the server answers 503 `overloaded` with
 * Retry-After, in the error shape, and stores nothing of a refused request; under many clients it
 * loses no write. No timing assertions: waits are bounded, counts are exact.
 */

const ACTION = "/api/v3/workers";
const BIG_BURST = Number(process.env.WORKYARD_LOAD_BURST ?? 80);

function post(server: TestServer, action: string, body: unknown, token = server.adminToken): Promise<RawAnswer> {
  return rawRequest(server.url, {
    method: "POST",
    path: `${ACTION}${action}`,
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
}

function hold(server: TestServer, action: string, body: unknown): HeldRequest {
  return holdRequest(server.url, {
    method: "POST",
    path: `${ACTION}${action}`,
    headers: { "content-type": "application/json", authorization: `Bearer ${server.adminToken}` },
    body: JSON.stringify(body),
  });
}

/** What is wrong with a 503, or undefined if it is `overloaded` with a usable Retry-After. */
function overloadProblem(answer: RawAnswer): string | undefined {
  const retryAfter = String(answer.headers["retry-after"] ?? "");
  if (!/^[1-9]\d*$/.test(retryAfter)) return `Retry-After is ${JSON.stringify(answer.headers["retry-after"])}`;
  const shape = errorShapeProblem(answer);
  if (shape) return shape;
  if (answer.json.code !== "overloaded") return `code is ${answer.json.code}`;
  return undefined;
}

/** Statuses with counts, e.g. {200: 8, 503: 192}. */
function tally(answers: RawAnswer[]): Record<number, number> {
  const out: Record<number, number> = {};
  for (const a of answers) out[a.status] = (out[a.status] ?? 0) + 1;
  return out;
}

async function envOf(server: TestServer, workerId: string): Promise<Map<string, string>> {
  const pulled = await post(server, "PullEnv", { workerId });
  expect(pulled.status, pulled.text).toBe(200);
  return new Map((pulled.json.env as { key: string; value: string }[]).map((e) => [e.key, e.value]));
}

// ---------------------------------------------------------------------------------------------
// (a) The in-flight limit
// ---------------------------------------------------------------------------------------------

describe.each(DIALECTS)("(a) past maxConcurrentRequests on %s", (dialect) => {
  const LIMIT = 8;
  let server: TestServer;
  let workerId: string;
  const BASE_SECRETS = 300;

  beforeAll(async () => {
    server = await startTestServer({ dialect, maxConcurrentRequests: LIMIT, logLevel: "error" });
    const created = await post(server, "CreateWorker", { name: "load" });
    workerId = created.json.worker.workerId;
    // Many secrets: every PullEnv opens each of them.
    const secrets = Array.from({ length: BASE_SECRETS }, (_, i) => ({ key: `BASE_${i}`, value: `base-value-${i}-${"v".repeat(200)}` }));
    expect((await post(server, "UpsertSecrets", { workerId, secrets })).status).toBe(200);
  });
  afterAll(async () => server?.stop());

  /** A worker of its own for each test's writes (a worker holds at most 500 secrets). */
  async function freshWorker(name: string): Promise<string> {
    const created = await post(server, "CreateWorker", { name });
    expect(created.status).toBe(200);
    return created.json.worker.workerId;
  }

  /** Four fresh keys per UpsertSecrets request: stored all together or not at all. */
  const upsertBody = (target: string, tag: string) => ({ workerId: target, secrets: [0, 1, 2, 3].map((k) => ({ key: `${tag}_${k}`, value: `${tag}-value-${k}` })) });

  /** Every UpsertSecrets that answered 200 stored all its keys; every refused one stored none. */
  async function expectAllOrNothing(target: string, upserts: { tag: string; status: number }[]): Promise<void> {
    const env = await envOf(server, target);
    const wrong: string[] = [];
    for (const { tag, status } of upserts) {
      const stored = [0, 1, 2, 3].filter((k) => env.get(`${tag}_${k}`) === `${tag}-value-${k}`).length;
      const present = [0, 1, 2, 3].filter((k) => env.has(`${tag}_${k}`)).length;
      if (status === 200 && stored !== 4) wrong.push(`${tag} answered 200 but stored ${stored} of 4 keys`);
      if (status !== 200 && present !== 0) wrong.push(`${tag} answered ${status} but ${present} of its 4 keys are stored`);
    }
    expect(wrong).toEqual([]);
    expect(env.size).toBe(4 * upserts.filter((u) => u.status === 200).length);
    // The read target kept its secrets.
    const read = await envOf(server, workerId);
    expect(read.size).toBe(BASE_SECRETS);
    for (let i = 0; i < BASE_SECRETS; i++) expect(read.get(`BASE_${i}`)).toBe(`base-value-${i}-${"v".repeat(200)}`);
  }

  /** Holds `n` PullEnv requests, and answers once they are all in the server's hands (a probe is refused). */
  async function holdAdmitted(n: number): Promise<HeldRequest[]> {
    const held = Array.from({ length: n }, () => hold(server, "PullEnv", { workerId }));
    // Their headers are on the wire before any probe connects.
    await Promise.all(held.map((h) => h.sent));
    await waitFor(`${n} held requests fill the limit of ${LIMIT}`, async () => (await post(server, "ListWorkers", {})).status === 503, 30_000);
    return held;
  }

  it("200 requests held at once: exactly the limit is admitted and answers 200, the rest 503 overloaded with Retry-After", async () => {
    const writes = await freshWorker("held-writes");
    const requests = Array.from({ length: 200 }, (_, i) =>
      i % 2 === 0
        ? { kind: "pull", tag: `P${i}`, held: hold(server, "PullEnv", { workerId }) }
        : { kind: "upsert", tag: `H${i}`, held: hold(server, "UpsertSecrets", upsertBody(writes, `H${i}`)) },
    );
    // The refused ones are answered without their body; the admitted wait for it.
    await waitFor(`the ${200 - LIMIT} refused requests are answered`, () => requests.filter((r) => r.held.answered()).length >= 200 - LIMIT, 30_000);
    for (const r of requests) r.held.release();
    const answers = await Promise.all(requests.map((r) => r.held.answer));

    expect(tally(answers)).toEqual({ 200: LIMIT, 503: 200 - LIMIT });
    const problems = answers.flatMap((a, i) => (a.status === 503 && overloadProblem(a) ? [`#${i}: ${overloadProblem(a)}: ${a.text}`] : []));
    expect(problems).toEqual([]);
    for (const [i, a] of answers.entries()) {
      if (a.status === 200 && requests[i]!.kind === "pull") expect(a.json.env.length).toBeGreaterThanOrEqual(BASE_SECRETS);
    }
    await expectAllOrNothing(writes, requests.flatMap((r, i) => (r.kind === "upsert" ? [{ tag: r.tag, status: answers[i]!.status }] : [])));
  });

  it("200 concurrent requests, not held: each answers 200 or 503 overloaded, and a refused write stored nothing", async () => {
    const writes = await freshWorker("free-writes");
    const tasks = Array.from({ length: 200 }, (_, i) => () => (i % 2 === 0 ? post(server, "PullEnv", { workerId }) : post(server, "UpsertSecrets", upsertBody(writes, `F${i}`))));
    const answers = await pool(tasks, 200);
    const statuses = Object.keys(tally(answers)).map(Number);
    expect(statuses.filter((s) => s !== 200 && s !== 503), JSON.stringify(tally(answers))).toEqual([]);
    const problems = answers.flatMap((a, i) => (a.status === 503 && overloadProblem(a) ? [`#${i}: ${overloadProblem(a)}`] : []));
    expect(problems).toEqual([]);
    await expectAllOrNothing(writes, answers.flatMap((a, i) => (i % 2 === 1 ? [{ tag: `F${i}`, status: a.status }] : [])));
  });

  it("afterwards, normal requests succeed and the whole limit is available again", async () => {
    for (let i = 0; i < 20; i++) expect((await post(server, "ListWorkers", {})).status).toBe(200);
    const concurrent = await Promise.all(Array.from({ length: LIMIT }, () => post(server, "PullEnv", { workerId })));
    expect(tally(concurrent)).toEqual({ 200: LIMIT });
    // Exactly LIMIT held requests are all admitted (none refused: no slot leaked), and fill the limit.
    const held = await holdAdmitted(LIMIT);
    expect(held.filter((h) => h.answered())).toEqual([]);
    for (const h of held) h.release();
    expect(tally(await Promise.all(held.map((h) => h.answer)))).toEqual({ 200: LIMIT });
    expect((await post(server, "ListWorkers", {})).status).toBe(200);
  });

  it("clients that give up while admitted free their slots", async () => {
    const gaveUp = await holdAdmitted(LIMIT);
    for (const h of gaveUp) h.abort();
    // The server notices the closed connections: LIMIT requests at once all pass again.
    await waitFor(
      "the slots of the clients that gave up are freed",
      async () => (await Promise.all(Array.from({ length: LIMIT }, () => post(server, "ListWorkers", {})))).every((a) => a.status === 200),
      30_000,
    );
    const held = await holdAdmitted(LIMIT);
    expect(held.filter((h) => h.answered())).toEqual([]);
    for (const h of held) h.release();
    expect(tally(await Promise.all(held.map((h) => h.answer)))).toEqual({ 200: LIMIT });
  });
});

// ---------------------------------------------------------------------------------------------
// (b) The per-deployment run queue
// ---------------------------------------------------------------------------------------------

interface Gate {
  url: string;
  /** Requests that reached the gate so far. */
  arrivals(): number;
  /** Lets every waiting and later request through. */
  open(): void;
  /** Holds later requests again. */
  shut(): void;
  stop(): Promise<void>;
}

/** An HTTP gate the deployed tool waits on: the test decides when runs may finish. */
async function startGate(): Promise<Gate> {
  const waiting: http.ServerResponse[] = [];
  let arrivals = 0;
  let isOpen = false;
  const server = http.createServer((_request, response) => {
    arrivals += 1;
    if (isOpen) response.end("open");
    else waiting.push(response);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const open = () => {
    isOpen = true;
    for (const response of waiting.splice(0)) response.end("open");
  };
  return {
    url: `http://127.0.0.1:${port}`,
    arrivals: () => arrivals,
    open,
    shut() {
      isOpen = false;
    },
    async stop() {
      open();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const gateSource = (gateUrl: string) => `import { Worker } from "@notionhq/workers";
import { j } from "@notionhq/workers/schema-builder";

const worker = new Worker();
export default worker;

worker.tool("hold", {
  title: "Hold",
  description: "Waits at the test's gate, then returns its tag",
  schema: j.object({ tag: j.string() }),
  execute: async ({ tag }) => {
    const response = await fetch(${JSON.stringify(gateUrl)} + "/" + tag);
    return { tag, gate: await response.text() };
  },
});
`;

describe("(b) past the per-deployment run queue", () => {
  const PROCESSES = 1;
  const QUEUE = 2;
  const ADMITTED = PROCESSES + QUEUE;
  let server: TestServer;
  let gate: Gate;
  let tmp: { dir: string; cleanup(): void };
  let project: string;
  let env: Record<string, string | undefined>;
  let workerId: string;
  /** Run ids of every run that was admitted and answered 200, over all the tests below. */
  const admittedRunIds = new Set<string>();

  beforeAll(async () => {
    gate = await startGate();
    // This server alone: one process per deployment taking one run at a time, two runs queued.
    server = await startTestServer({ logLevel: "error", processesPerDeployment: PROCESSES, runsPerProcess: 1, queuedRunsPerDeployment: QUEUE });
    tmp = tempDir("wy-load-runs-");
    env = cliEnv(server, path.join(tmp.dir, "home"));
    const deps = fixtureDeps();
    project = writeProject(path.join(tmp.dir, "gate"), deps, gateSource(gate.url));
    const deployed = await ntn(["workers", "deploy", "--name", "gate"], { cwd: project, env, timeoutMs: 300_000 });
    expect(deployed.code, deployed.stderr).toBe(0);
    workerId = workerIdOf(project);
  });
  afterAll(async () => {
    await server?.stop();
    await gate?.stop();
    tmp?.cleanup();
  });

  /** The runs `ntn workers runs list --json` shows for the worker. */
  async function listedRuns(): Promise<{ runId: string; name: string; status: string; exitCode: number | null }[]> {
    const listed = await ntn(["workers", "runs", "list", "--json"], { cwd: project, env });
    expect(listed.code, listed.stderr).toBe(0);
    return JSON.parse(listed.stdout);
  }

  /**
   * Fires `n` runs at once while the gate is shut: the first takes the process and waits at the
   * gate, QUEUE wait for it, the rest are refused. Then the gate opens and every admitted run ends.
   */
  async function burst(n: number, options: { stream: boolean }): Promise<RawAnswer[]> {
    gate.shut();
    const before = gate.arrivals();
    // No admitted run can end while the gate is shut: whatever answers before it opens was refused.
    let ended = 0;
    const answers = Array.from({ length: n }, (_, i) =>
      post(server, "RunCapability", { workerId, capabilityKey: "hold", args: { tag: `t${i}` }, stream: options.stream }).then((a) => {
        ended += 1;
        return a;
      }),
    );
    await waitFor("the admitted runs reach the gate and the rest are answered", () => gate.arrivals() - before >= PROCESSES && ended >= n - ADMITTED, 90_000);
    gate.open();
    return Promise.all(answers);
  }

  it("a burst of 12 runs: 3 are admitted and succeed, 9 answer 503 overloaded with Retry-After, and runs list shows exactly the 3", async () => {
    const answers = await burst(12, { stream: false });
    expect(tally(answers)).toEqual({ 200: ADMITTED, 503: 12 - ADMITTED });
    for (const a of answers) {
      if (a.status === 503) expect(overloadProblem(a), a.text).toBeUndefined();
      else {
        expect(a.json.result).toEqual({ tag: expect.stringMatching(/^t\d+$/), gate: "open" });
        admittedRunIds.add(a.json.runId);
      }
    }
    const runs = await listedRuns();
    expect(runs.map((r) => r.runId).sort()).toEqual([...admittedRunIds].sort());
    expect(runs.every((r) => r.name === "hold" && r.status === "succeeded" && r.exitCode === 0)).toBe(true);
  });

  it(`a burst of ${BIG_BURST} runs: still exactly 3 admitted, and the ${BIG_BURST - 3} refused leave no run record`, async () => {
    const answers = await burst(BIG_BURST, { stream: false });
    expect(tally(answers)).toEqual({ 200: ADMITTED, 503: BIG_BURST - ADMITTED });
    for (const a of answers) {
      if (a.status === 503) expect(overloadProblem(a), a.text).toBeUndefined();
      else admittedRunIds.add(a.json.runId);
    }
    const runs = await listedRuns();
    expect(runs.map((r) => `${r.runId} ${r.status}`).sort()).toEqual([...admittedRunIds].map((id) => `${id} succeeded`).sort());
  });

  it("streamed runs (exec --stream) past the queue answer 503 overloaded with Retry-After too, not a 200 stream", async () => {
    const answers = await burst(12, { stream: true });
    const refused = answers.filter((a) => a.status !== 200);
    const streamedRefusals = answers.filter((a) => a.status === 200 && /"_tag":"error"/.test(a.text));
    expect(
      { refused: refused.length, refusedInsideA200Stream: streamedRefusals.length },
      `a refused streamed run answered: ${streamedRefusals[0]?.text ?? refused[0]?.text}`,
    ).toEqual({ refused: 12 - ADMITTED, refusedInsideA200Stream: 0 });
    for (const a of refused) expect(overloadProblem(a), a.text).toBeUndefined();
    for (const a of answers.filter((x) => x.status === 200)) {
      const last = JSON.parse(a.text.trim().split("\n").at(-1)!);
      expect(last).toMatchObject({ _tag: "result", result: { gate: "open" } });
      admittedRunIds.add(last.runId);
    }
    const runs = await listedRuns();
    expect(runs.map((r) => r.runId).sort()).toEqual([...admittedRunIds].sort());
  });
});

// ---------------------------------------------------------------------------------------------
// (c) Many clients
// ---------------------------------------------------------------------------------------------

describe.each(DIALECTS)("(c) 50 clients at once on %s", (dialect) => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ dialect, logLevel: "error" });
  });
  afterAll(async () => server?.stop());

  it("create / set secrets / pull / delete cycles: every answer 2xx (503s retried), and the store holds exactly what was written", async () => {
    const CLIENTS = 50;
    const RUN_FOR_MS = 4000;
    const shared = (await post(server, "CreateWorker", { name: "shared" })).json.worker.workerId as string;
    /** Kept workers and the secrets each must hold. */
    const expected = new Map<string, Map<string, string>>([[shared, new Map()]]);
    const failures: string[] = [];
    let retries = 0;
    let cycles = 0;

    /** An action, retried while it answers 503 with Retry-After; any other non-2xx is a failure. */
    async function call(action: string, body: unknown, expectStatus = 200): Promise<RawAnswer> {
      for (;;) {
        const answer = await post(server, action, body);
        if (answer.status === 503 && /^\d+$/.test(String(answer.headers["retry-after"] ?? ""))) {
          retries += 1;
          await new Promise((resolve) => setTimeout(resolve, Math.min(Number(answer.headers["retry-after"]) * 1000, 1000)));
          continue;
        }
        if (answer.status !== expectStatus) failures.push(`${action} ${JSON.stringify(body).slice(0, 120)} answered ${answer.status}: ${answer.text.slice(0, 300)}`);
        return answer;
      }
    }

    async function client(c: number): Promise<void> {
      const deadline = Date.now() + RUN_FOR_MS;
      for (let cycle = 0; cycle < 2 || Date.now() < deadline; cycle++) {
        cycles += 1;
        const created = await call("CreateWorker", { name: `c${c}-${cycle}` });
        if (created.status !== 200) return;
        const workerId = created.json.worker.workerId as string;
        const mine = new Map<string, string>();
        const first = [0, 1, 2].map((k) => ({ key: `K${k}`, value: `c${c}-${cycle}-${k}-${crypto.randomBytes(6).toString("hex")}` }));
        await call("UpsertSecrets", { workerId, secrets: first });
        for (const e of first) mine.set(e.key, e.value);
        // An update and a delete, then what PullEnv must show: read-your-writes.
        const update = { key: "K1", value: `updated-${crypto.randomBytes(4).toString("hex")}` };
        await call("UpsertSecrets", { workerId, secrets: [update] });
        mine.set(update.key, update.value);
        await call("DeleteSecret", { workerId, key: "K0" });
        mine.delete("K0");
        const pulled = await call("PullEnv", { workerId });
        const got = new Map((pulled.json?.env ?? []).map((e: { key: string; value: string }) => [e.key, e.value]));
        if (JSON.stringify([...got].sort()) !== JSON.stringify([...mine].sort())) failures.push(`PullEnv of ${workerId} showed ${JSON.stringify([...got])}, expected ${JSON.stringify([...mine])}`);
        // Every client writes its own key of the shared worker at once with the others.
        const value = `c${c}-cycle-${cycle}`;
        await call("UpsertSecrets", { workerId: shared, secrets: [{ key: `S_C${c}`, value }] });
        expected.get(shared)!.set(`S_C${c}`, value);
        if (cycle % 2 === 0) {
          await call("DeleteWorker", { workerId });
          await call("GetWorker", { workerId }, 404);
        } else {
          expected.set(workerId, mine);
        }
      }
    }

    await Promise.all(Array.from({ length: CLIENTS }, (_, c) => client(c)));
    expect(failures.slice(0, 20), `${failures.length} failure(s) over ${cycles} cycles (${retries} retries after 503)`).toEqual([]);

    // The store holds exactly what the successful requests wrote: no lost and no extra write.
    const listed = await call("ListWorkers", {});
    expect(listed.json.workers.map((w: { workerId: string }) => w.workerId).sort()).toEqual([...expected.keys()].sort());
    const wrong: string[] = [];
    await pool(
      [...expected].map(([workerId, secrets]) => async () => {
        const env = await envOf(server, workerId);
        if (JSON.stringify([...env].sort()) !== JSON.stringify([...secrets].sort())) wrong.push(`${workerId}: ${JSON.stringify([...env])} instead of ${JSON.stringify([...secrets])}`);
        const names = (await call("ListSecrets", { workerId })).json.secrets.map((s: { key: string }) => s.key).sort();
        if (JSON.stringify(names) !== JSON.stringify([...secrets.keys()].sort())) wrong.push(`${workerId}: ListSecrets shows ${names}`);
      }),
      10,
    );
    expect(wrong.slice(0, 10), `${wrong.length} worker(s) differ`).toEqual([]);
    // Deleted workers left nothing behind.
    const db = server.server.store.db;
    const orphans = await db.selectFrom("secrets").select("worker_id").distinct().execute();
    expect(orphans.map((o) => o.worker_id).filter((id) => !expected.has(id))).toEqual([]);
  });
});
