/**
 * Shared by the robustness tests: raw HTTP requests (node:http, so a test controls the method, the
 * headers and the bytes), the error-shape check, and a snapshot of the store's tables.
 */
import crypto from "node:crypto";
import http from "node:http";
import type { Kysely } from "kysely";
import type { Database } from "../../packages/server/src/store/schema.js";

export interface RawAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  /** The parsed JSON body, or undefined when the body is not JSON. */
  json: any;
}

export interface RawRequest {
  method: string;
  /** Sent as it is: no normalisation, no encoding. */
  path: string;
  headers?: Record<string, string>;
  /** Pieces are sent chunked, one write each, so the server has to count what it reads. */
  body?: Buffer | string | Buffer[];
}

/**
 * One request on a connection of its own. A server that answers early (413, 503) and closes may
 * make our write fail: that error is ignored once the answer arrived. No answer within `timeoutMs`
 * rejects (a hang is a failure, not a slow pass).
 */
export function rawRequest(baseUrl: string, request: RawRequest, timeoutMs = 30_000): Promise<RawAnswer> {
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = http.request({
      host: hostname,
      port,
      method: request.method,
      path: request.path,
      headers: request.headers ?? {},
      agent: false,
      // Our own Host header may be part of what is fuzzed; node adds one otherwise.
      setHost: !(request.headers && Object.keys(request.headers).some((h) => h.toLowerCase() === "host")),
    });
    const timer = setTimeout(() => {
      req.destroy(new Error(`no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    req.on("response", (response) => {
      answered = true;
      const chunks: Buffer[] = [];
      response.on("data", (chunk: Buffer) => chunks.push(chunk));
      response.on("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
      response.on("end", () => {
        clearTimeout(timer);
        const text = Buffer.concat(chunks).toString("utf8");
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: response.statusCode ?? 0, headers: response.headers, text, json });
      });
    });
    req.on("error", (error) => {
      if (answered) return;
      clearTimeout(timer);
      reject(error);
    });
    const body = request.body;
    if (Array.isArray(body)) {
      const write = (i: number) => {
        if (i >= body.length || req.destroyed) return req.end();
        req.write(body[i], () => setImmediate(() => write(i + 1)));
      };
      return write(0);
    }
    // node frames a body of GET, DELETE, OPTIONS... only when told its length.
    const names = Object.keys(request.headers ?? {}).map((h) => h.toLowerCase());
    if (body !== undefined && !names.includes("content-length") && !names.includes("transfer-encoding")) {
      req.setHeader("content-length", Buffer.byteLength(body));
    }
    req.end(body);
  });
}

/**
 * What is wrong with a non-2xx answer's body, or undefined if it is the Notion API's error shape
 * `{object: "error", status, code, name, message}` with `status` equal to the HTTP status.
 */
export function errorShapeProblem(answer: RawAnswer): string | undefined {
  const type = String(answer.headers["content-type"] ?? "");
  if (!/^application\/json\b/.test(type)) return `content-type ${JSON.stringify(type)} is not application/json`;
  const body = answer.json;
  if (typeof body !== "object" || body === null || Array.isArray(body)) return "the body is not a JSON object";
  if (body.object !== "error") return `object is ${JSON.stringify(body.object)}, not "error"`;
  if (body.status !== answer.status) return `status field ${JSON.stringify(body.status)} differs from the HTTP status ${answer.status}`;
  if (typeof body.code !== "string" || !/^[a-z][a-z0-9_]*$/.test(body.code)) return `code ${JSON.stringify(body.code)} is not a snake_case string`;
  if (body.name !== body.code) return `name ${JSON.stringify(body.name)} does not repeat the code`;
  if (typeof body.message !== "string" || body.message.length === 0) return "message is not a non-empty string";
  if (/\n\s+at /.test(body.message) || /FST_|node_modules/.test(JSON.stringify(body))) return "the body shows internals (stack, FST_ code or a path)";
  return undefined;
}

/** The tables that requests write; `workspaces` too, since CreateWorkspace writes it. */
export const STORE_TABLES = [
  "workspaces",
  "workers",
  "secrets",
  "api_tokens",
  "uploads",
  "deployments",
  "runs",
  "oauth_connections",
  "oauth_flows",
  "cli_login_sessions",
] as const;

export type StoreSnapshot = Record<(typeof STORE_TABLES)[number], { count: number; hash: string }>;

function canonical(value: unknown): unknown {
  if (Buffer.isBuffer(value) || value instanceof Uint8Array) return `bytes:${Buffer.from(value).toString("hex")}`;
  if (typeof value === "bigint") return `bigint:${value.toString()}`;
  return value;
}

/** Count and SHA-256 of every row of every table (rows sorted, columns sorted). */
export async function snapshotStore(db: Kysely<Database>): Promise<StoreSnapshot> {
  const out = {} as StoreSnapshot;
  for (const table of STORE_TABLES) {
    const rows = (await db.selectFrom(table).selectAll().execute()) as Record<string, unknown>[];
    const lines = rows
      .map((row) => JSON.stringify(Object.keys(row).sort().map((column) => [column, canonical(row[column])])))
      .sort();
    out[table] = { count: rows.length, hash: crypto.createHash("sha256").update(lines.join("\n")).digest("hex") };
  }
  return out;
}

/** The tables whose rows differ between two snapshots. */
export function changedTables(before: StoreSnapshot, after: StoreSnapshot): string[] {
  return STORE_TABLES.filter((t) => before[t].count !== after[t].count || before[t].hash !== after[t].hash).map(
    (t) => `${t} (${before[t].count} -> ${after[t].count} rows${before[t].hash === after[t].hash ? "" : ", contents changed"})`,
  );
}

/** Runs `tasks` with at most `limit` at once; answers in task order. */
export async function pool<T>(tasks: (() => Promise<T>)[], limit: number): Promise<T[]> {
  const results = new Array<T>(tasks.length);
  let next = 0;
  async function lane(): Promise<void> {
    while (next < tasks.length) {
      const index = next++;
      results[index] = await tasks[index]!();
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, lane));
  return results;
}

/** mulberry32: a small seeded PRNG, so a failing run can be replayed with its seed. */
export function prng(seed: number) {
  let state = seed >>> 0;
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (min: number, max: number): number => min + Math.floor(next() * (max - min + 1));
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)]!;
  const chance = (p: number): boolean => next() < p;
  const bytes = (n: number): Buffer => {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i++) out[i] = Math.floor(next() * 256);
    return out;
  };
  return { next, int, pick, chance, bytes };
}

export type Prng = ReturnType<typeof prng>;

export interface HeldRequest {
  /** Resolves once the connection is up and the headers are written. */
  sent: Promise<void>;
  /** The answer; rejects if the request was aborted before one came. */
  answer: Promise<RawAnswer>;
  /** Whether the server has answered already (without waiting for the body). */
  answered(): boolean;
  /** Sends the body: the server may now handle the request. */
  release(): void;
  /** Drops the connection, as a client that gives up. */
  abort(): void;
}

/**
 * A request whose headers are sent at once and whose body waits for `release()`: the server has
 * it in hand (it counts against the in-flight limit) for as long as the test wants.
 */
export function holdRequest(baseUrl: string, request: RawRequest & { body: string }): HeldRequest {
  const { hostname, port } = new URL(baseUrl);
  let done = false;
  let answeredAlready = false;
  const req = http.request({
    host: hostname,
    port,
    method: request.method,
    path: request.path,
    headers: { ...request.headers, "content-length": String(Buffer.byteLength(request.body)) },
    agent: false,
  });
  const answer = new Promise<RawAnswer>((resolve, reject) => {
    req.on("response", (response) => {
      answeredAlready = true;
      const chunks: Buffer[] = [];
      response.on("data", (chunk: Buffer) => chunks.push(chunk));
      response.on("error", reject);
      response.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: response.statusCode ?? 0, headers: response.headers, text, json });
      });
    });
    req.on("error", (error) => {
      if (!answeredAlready) reject(error);
    });
  });
  // An aborted request's rejection is expected; callers that care await `answer`.
  answer.catch(() => {});
  const sent = new Promise<void>((resolve) => {
    req.once("socket", (socket) => {
      const written = () => socket.write("", () => resolve());
      if (socket.connecting) socket.once("connect", () => setImmediate(written));
      else setImmediate(written);
    });
    req.once("error", () => resolve());
  });
  req.flushHeaders();
  return {
    sent,
    answer,
    answered: () => answeredAlready,
    release() {
      if (done) return;
      done = true;
      req.end(request.body);
    },
    abort() {
      done = true;
      req.destroy();
    },
  };
}

/**
 * Polls `condition` until it holds; throws naming `what` after `limitMs` (a bound on waiting,
 * never an assertion on speed), so no caller can carry on as if it had held.
 */
export async function waitFor(what: string, condition: () => boolean | Promise<boolean>, limitMs = 60_000): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`Gave up after ${limitMs / 1000}s waiting until ${what}.`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
