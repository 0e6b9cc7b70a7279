/**
 * Security review, low finding: a body whose `args` nested 200,000 levels deep answered 500 (the
 * stack ran out walking it). Any JSON body nested deeper than MAX_JSON_DEPTH is now a 400
 * validation_error before any handler sees it, and the server keeps serving.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MAX_JSON_DEPTH, nestedDeeperThan } from "../../packages/server/src/api/app.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";

let server: TestServer;
let workerId: string;

beforeAll(async () => {
  server = await startTestServer();
  const created = await server.call("CreateWorker", { name: "deep-json" });
  expect(created.status).toBe(200);
  workerId = created.body.worker.workerId;
});
afterAll(async () => {
  await server?.stop();
});

async function post(action: string, body: string): Promise<{ status: number; body: any }> {
  const response = await fetch(`${server.url}/api/v3/workers${action}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${server.adminToken}` },
    body,
  });
  return { status: response.status, body: await response.json() };
}

const arrays = (depth: number) => `${"[".repeat(depth)}${"]".repeat(depth)}`;
const objects = (depth: number) => `${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`;

describe("deeply nested JSON bodies", () => {
  it("answers 400 validation_error for args nested 200,000 levels, and keeps serving", async () => {
    const body = `{"workerId":${JSON.stringify(workerId)},"capabilityKey":"tool","args":${arrays(200_000)}}`;
    const answer = await post("RunCapability", body);
    expect(answer.status).toBe(400);
    expect(answer.body).toMatchObject({ object: "error", status: 400, code: "validation_error" });
    expect(answer.body.message).toBe(`The request body is nested too deeply: JSON arrays and objects may nest at most ${MAX_JSON_DEPTH} levels.`);
    expect(server.logs()).not.toContain("request failed");

    const after = await server.call("GetWorker", { workerId });
    expect(after.status).toBe(200);
  });

  it("refuses deep objects in any action's body the same way", async () => {
    for (const action of ["UpsertSecrets", "CreateWorker", "NoSuchAction"]) {
      const answer = await post(action, `{"x":${objects(100_000)}}`);
      expect(answer.status, action).toBe(400);
      expect(answer.body.code, action).toBe("validation_error");
    }
  });

  it("accepts nesting up to the limit (the body reaches the action) and refuses one level more", async () => {
    // The body object itself is one level: args may nest MAX_JSON_DEPTH - 1 more.
    const at = await post("RunCapability", `{"workerId":${JSON.stringify(workerId)},"capabilityKey":"tool","args":${arrays(MAX_JSON_DEPTH - 1)}}`);
    expect(at.status).toBe(409);
    expect(at.body.code).toBe("no_live_deployment");
    const over = await post("RunCapability", `{"workerId":${JSON.stringify(workerId)},"capabilityKey":"tool","args":${arrays(MAX_JSON_DEPTH)}}`);
    expect(over.status).toBe(400);
    expect(over.body.code).toBe("validation_error");
  });

  it("does not count brackets inside strings, escaped quotes included", async () => {
    const text = `\\"${"[{".repeat(10_000)}`;
    const answer = await post("CreateWorker", JSON.stringify({ name: "brackets", uploadType: text.slice(0, 400) }));
    expect(answer.status).toBe(200);
    expect(nestedDeeperThan(JSON.stringify({ s: "[".repeat(1000) + '\\"' + "{".repeat(1000) }), 2)).toBe(false);
    expect(nestedDeeperThan('{"a":"\\\\"}', 1)).toBe(false);
    expect(nestedDeeperThan('{"a":"\\\\",{"b":1}}', 1)).toBe(true);
  });

  it("still refuses malformed JSON and prototype poisoning as invalid_json", async () => {
    const broken = await post("GetWorker", `{"workerId":`);
    expect(broken.status).toBe(400);
    expect(broken.body.code).toBe("invalid_json");
    const poisoned = await post("GetWorker", `{"workerId":${JSON.stringify(workerId)},"__proto__":{"admin":true}}`);
    expect(poisoned.status).toBe(400);
    expect(poisoned.body.code).toBe("invalid_json");
  });
});
