/**
 * Shared bench tools: a keep-alive HTTP client, a closed-loop load runner, percentiles, and the
 * baselines every figure is compared with in the same run (a bare Node HTTP server; one IPC round
 * trip to a warm child). Machines are shared and noisy: read ratios, not absolute numbers.
 */
import { spawn, type ChildProcess } from "node:child_process";
import http from "node:http";
// @ts-expect-error plain JavaScript module without type declarations
import * as loadJs from "./load.mjs";
import type { AddressInfo } from "node:net";
import os from "node:os";

export interface Stats {
  /** The raw latencies, when the stats came from `load` (to merge runs of several clients). */
  samples?: number[];
  count: number;
  p50: number;
  p99: number;
  mean: number;
  throughput: number;
  /** Answers that were not 200 with the expected body (loadInThread, loadInProcess). */
  bad?: number;
  firstBad?: string;
}

export const stats: (samplesMs: number[], wallMs: number) => Stats = loadJs.stats;
export const client: (baseUrl: string, maxSockets: number) => {
  post(path: string, body: unknown, headers?: Record<string, string>): Promise<{ status: number; text: string }>;
  close(): void;
} = loadJs.client;
export const load: (op: () => Promise<unknown>, options: { concurrency: number; durationMs: number; warmupMs?: number }) => Promise<Stats> = loadJs.load;

/** Several loads that ran side by side, as one: merged latencies, summed throughput. */
export function merge(parts: Stats[]): Stats {
  const all = parts.flatMap((p) => p.samples ?? []);
  const merged = stats(all, 1000);
  return { ...merged, throughput: parts.reduce((sum, p) => sum + p.throughput, 0) };
}

export function fmt(s: Stats): string {
  return `p50 ${(s.p50 * 1000).toFixed(0)} µs  p99 ${(s.p99 * 1000).toFixed(0)} µs  ${s.throughput.toFixed(0)} req/s  (n=${s.count})`;
}

/** `load` of keep-alive POSTs, run from a worker thread (see load-worker.ts). */
export async function loadInThread(options: {
  url: string;
  path: string;
  body: unknown;
  headers?: Record<string, string>;
  concurrency: number;
  durationMs: number;
  /** A substring every answer must hold (answers are checked: status `expectStatus` and this). */
  expect?: string;
  /** The status every answer must have (200 unless given). */
  expectStatus?: number;
}): Promise<Stats> {
  const { Worker } = await import("node:worker_threads");
  const worker = new Worker(new URL("./load-worker.mjs", import.meta.url), { workerData: { headers: {}, ...options } });
  return new Promise((resolve, reject) => {
    worker.once("message", (stats: Stats) => {
      void worker.terminate();
      resolve(stats);
    });
    worker.once("error", reject);
  });
}

/** The same load from a Node process of its own: a client outside the server's process. */
export async function loadInProcess(options: Parameters<typeof loadInThread>[0] & { expect?: string }): Promise<Stats> {
  const child = spawn(process.execPath, [new URL("./load-worker.mjs", import.meta.url).pathname, JSON.stringify({ headers: {}, ...options })], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout!.on("data", (chunk: Buffer) => (out += chunk.toString("utf8")));
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  if (code !== 0) throw new Error(`the load process exited with ${code}`);
  return JSON.parse(out) as Stats;
}

/** A bare Node HTTP server that answers every POST with the same JSON (and status): the HTTP floor. */
export async function bareServer(answer: unknown, status = 200): Promise<{ url: string; stop(): Promise<void> }> {
  const body = JSON.stringify(answer);
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.statusCode = status;
      res.setHeader("content-type", "application/json");
      res.end(body);
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    stop: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** A bare HTTP server that forwards each request over IPC to a warm child and answers its reply. */
export async function ipcServer(): Promise<{ url: string; stop(): Promise<void> }> {
  const child: ChildProcess = spawn(process.execPath, ["-e", "process.on('message', (m) => process.send({ id: m.id, result: { ok: true } }))"], {
    stdio: ["ignore", "ignore", "inherit", "ipc"],
  });
  const pending = new Map<number, (v: unknown) => void>();
  let next = 0;
  child.on("message", (m: { id: number; result: unknown }) => {
    pending.get(m.id)?.(m.result);
    pending.delete(m.id);
  });
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      const id = next++;
      pending.set(id, (result) => {
        res.setHeader("content-type", "application/json");
        res.end(JSON.stringify({ result }));
      });
      child.send({ id });
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    stop: async () => {
      child.kill();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * Counts every query the server sends to PostgreSQL from now on (each is one round trip), at the
 * driver; answers a reader of the count so far.
 */
export async function countPostgresRoundTrips(): Promise<() => number> {
  const { default: pg } = await import("pg");
  let count = 0;
  const query = pg.Client.prototype.query;
  pg.Client.prototype.query = function (this: import("pg").Client, ...args: unknown[]) {
    count += 1;
    return (query as (...a: unknown[]) => unknown).apply(this, args);
  } as typeof query;
  return () => count;
}

export function machine(): string {
  const cpu = os.cpus()[0]?.model ?? "unknown CPU";
  return `${os.cpus().length} × ${cpu}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.versions.node}, ${os.platform()} ${os.release()}`;
}

export function header(title: string): void {
  console.log(`\n== ${title}`);
  console.log(`machine: ${machine()}`);
  console.log(`date: ${new Date().toISOString()}`);
}
