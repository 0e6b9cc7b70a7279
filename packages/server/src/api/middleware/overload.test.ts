import { afterEach, describe, expect, it } from "vitest";
import Fastify, { type FastifyInstance } from "fastify";
import { overloadLimiter } from "./overload.js";

let app: FastifyInstance | undefined;

afterEach(async () => {
  await app?.close();
  app = undefined;
});

/** An app whose /slow requests wait until released, behind a limiter of `max` requests. */
async function serve(max: number) {
  const waiting: (() => void)[] = [];
  let arrived = 0;
  app = Fastify({ logger: false, forceCloseConnections: true });
  app.addHook("onRequest", overloadLimiter(max));
  app.get("/slow", async () => {
    arrived += 1;
    await new Promise<void>((resolve) => waiting.push(resolve));
    return { ok: true };
  });
  app.get("/fast", async () => ({ ok: true }));
  const url = await app.listen({ host: "127.0.0.1", port: 0 });
  const until = async (condition: () => boolean) => {
    for (let i = 0; i < 500 && !condition(); i += 1) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(condition()).toBe(true);
  };
  return {
    url,
    until,
    arrived: () => arrived,
    release: () => {
      for (const resolve of waiting.splice(0)) resolve();
    },
  };
}

describe("overloadLimiter", () => {
  it("answers 503 overloaded with Retry-After past the limit of requests in hand", async () => {
    const server = await serve(2);
    const slow = [fetch(`${server.url}/slow`), fetch(`${server.url}/slow`)];
    await server.until(() => server.arrived() === 2);

    const refused = await fetch(`${server.url}/fast`);
    expect(refused.status).toBe(503);
    expect(refused.headers.get("retry-after")).toBe("1");
    const body = (await refused.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ object: "error", status: 503, code: "overloaded", name: "overloaded", hint: "Retry after the time in the Retry-After header." });
    expect(body.message).toMatch(/too many requests/);
    expect(body.request_id).toEqual(expect.any(String));

    server.release();
    for (const response of await Promise.all(slow)) expect(response.status).toBe(200);
  });

  it("counts a request out when its response closes, answered or refused", async () => {
    const server = await serve(1);
    const first = fetch(`${server.url}/slow`);
    await server.until(() => server.arrived() === 1);
    // Refused requests are not in hand: many of them leave the count where it was.
    for (let i = 0; i < 3; i += 1) expect((await fetch(`${server.url}/fast`)).status).toBe(503);
    server.release();
    expect((await first).status).toBe(200);
    // The answered one is out again: room for the next.
    let status = 0;
    for (let i = 0; i < 50 && status !== 200; i += 1) {
      status = (await fetch(`${server.url}/fast`)).status;
      if (status !== 200) await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(status).toBe(200);
  });

  it("counts out a request whose client went away before the answer", async () => {
    const server = await serve(1);
    const aborted = new AbortController();
    const gone = fetch(`${server.url}/slow`, { signal: aborted.signal }).catch(() => undefined);
    await server.until(() => server.arrived() === 1);
    aborted.abort();
    await gone;
    let status = 0;
    for (let i = 0; i < 100 && status !== 200; i += 1) {
      status = (await fetch(`${server.url}/fast`)).status;
      if (status !== 200) await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(status).toBe(200);
    server.release();
  });
});
