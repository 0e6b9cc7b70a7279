import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DIALECTS } from "../helpers/dialects.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";

describe.each(DIALECTS)("workers and secrets API on %s", (dialect) => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ dialect });
  });
  afterAll(async () => server?.stop());

  it("creates, lists, gets and deletes a worker, with an upload ticket", async () => {
    const created = await server.call("CreateWorker", { name: "alpha", uploadType: "source" });
    expect(created.status).toBe(200);
    const { worker, url, fields } = created.body;
    expect(worker).toMatchObject({ name: "alpha", spaceId: server.workspaceId });
    expect(url).toBe(`${server.url}/api/v3/uploads/${fields.uploadId}`);
    expect(typeof fields.signature).toBe("string");

    const listed = await server.call("ListWorkers", {});
    expect(listed.body.workers.map((w: { workerId: string }) => w.workerId)).toContain(worker.workerId);
    expect((await server.call("GetWorker", { workerId: worker.workerId })).body.worker).toEqual(worker);

    expect((await server.call("DeleteWorker", { workerId: worker.workerId })).status).toBe(200);
    const gone = await server.call("GetWorker", { workerId: worker.workerId });
    expect(gone.status).toBe(404);
    expect(gone.body).toMatchObject({ object: "error", code: "worker_not_found", status: 404 });
  });

  it("stores secrets sealed, lists names only, pulls values, and deletes them", async () => {
    const { body } = await server.call("CreateWorker", { name: "secrets", uploadType: "source" });
    const workerId = body.worker.workerId;
    const set = await server.call("UpsertSecrets", {
      workerId,
      secrets: [
        { key: "API_KEY", value: "canary-value-1" },
        { key: "OTHER", value: "two words" },
      ],
    });
    expect(set.status).toBe(200);

    const listed = await server.call("ListSecrets", { workerId });
    expect(listed.body.secrets.map((s: { key: string }) => s.key)).toEqual(["API_KEY", "OTHER"]);
    expect(JSON.stringify(listed.body)).not.toContain("canary-value-1");

    const pulled = await server.call("PullEnv", { workerId });
    expect(pulled.body.env).toEqual([
      { key: "API_KEY", value: "canary-value-1" },
      { key: "OTHER", value: "two words" },
    ]);

    expect((await server.call("DeleteSecret", { workerId, key: "OTHER" })).status).toBe(200);
    const missing = await server.call("DeleteSecret", { workerId, key: "OTHER" });
    expect(missing.status).toBe(404);
    expect(missing.body.code).toBe("secret_not_found");
  });

  it("keeps secrets named like an object's own machinery (__proto__, constructor) as any other", async () => {
    const { body } = await server.call("CreateWorker", { name: "proto-names", uploadType: "source" });
    const workerId = body.worker.workerId;
    const secrets = [
      { key: "__proto__", value: "p" },
      { key: "constructor", value: "c" },
      { key: "toString", value: "t" },
    ];
    expect((await server.call("UpsertSecrets", { workerId, secrets })).status).toBe(200);
    const pulled = await server.call("PullEnv", { workerId });
    expect(pulled.status).toBe(200);
    expect([...pulled.body.env].sort((a: { key: string }, b: { key: string }) => a.key.localeCompare(b.key))).toEqual(
      [...secrets].sort((a, b) => a.key.localeCompare(b.key)),
    );
  });

  it("rejects a bad env name and stores nothing of that request", async () => {
    const { body } = await server.call("CreateWorker", { name: "names", uploadType: "source" });
    const workerId = body.worker.workerId;
    const bad = await server.call("UpsertSecrets", {
      workerId,
      secrets: [
        { key: "GOOD", value: "1" },
        { key: "9BAD", value: "2" },
      ],
    });
    expect(bad.status).toBe(400);
    expect(bad.body.code).toBe("env_name_invalid");
    expect(bad.body.message).toContain("9BAD");
    expect((await server.call("ListSecrets", { workerId })).body.secrets).toEqual([]);
  });

  it("ignores the runtime's OAuth token variables in UpsertSecrets", async () => {
    const { body } = await server.call("CreateWorker", { name: "reserved", uploadType: "source" });
    const workerId = body.worker.workerId;
    const key = "OAUTH_6769746875622D6F61757468_ACCESS_TOKEN";
    const set = await server.call("UpsertSecrets", { workerId, secrets: [{ key, value: "x" }, { key: "KEEP", value: "y" }] });
    expect(set.body).toEqual({ updated: ["KEEP"], ignored: [key], warnings: [] });
    expect((await server.call("ListSecrets", { workerId })).body.secrets.map((s: { key: string }) => s.key)).toEqual(["KEEP"]);
  });
});
