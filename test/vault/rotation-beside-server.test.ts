/**
 * `ntn server rotate-key` run beside a SQLite server (a second process: the server hears nothing
 * of it) re-seals every row and drops the old key from the key file. What the server kept from
 * before, sealed under the old key, must not turn into errors: a live deployment it had read
 * (its manifest sealed) still runs, and an OAuth connection it had read (its tokens sealed) still
 * gives its token.
 */
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { seedOauthConnection } from "../../bench/seed.js";
import { rotateMasterKey } from "../../packages/server/src/main.js";
import { Keyring } from "../../packages/server/src/vault/keyring.js";
import { cliEnv, fixtureDeps, workerIdOf, writeProject } from "../build-run/fixtures.js";
import { ntn } from "../helpers/run-ntn.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { tempDir } from "../helpers/tmp.js";

const SOURCE = `import { Worker } from "@notionhq/workers";
import { j } from "@notionhq/workers/schema-builder";
const worker = new Worker();
export default worker;
worker.tool("ping", { title: "ping", description: "pong", schema: j.object({}), execute: async () => "pong" });
// Endpoints nothing listens on: the stored token is valid, so none is called.
worker.oauth("linked", {
  name: "linked",
  authorizationEndpoint: "http://127.0.0.1:9/authorize",
  tokenEndpoint: "http://127.0.0.1:9/token",
  clientId: "client",
  clientSecret: "secret",
});
`;

describe("a key rotated offline beside a running SQLite server", () => {
  let server: TestServer;
  let second: TestServer | undefined;
  let tmp: { dir: string; cleanup(): void };
  let dir: string;

  beforeAll(async () => {
    server = await startTestServer();
    tmp = tempDir("wy-rotation-beside-");
    dir = writeProject(path.join(tmp.dir, "w"), fixtureDeps(), SOURCE);
    const deployed = await ntn(["workers", "deploy", "--name", "pinger"], { cwd: dir, env: cliEnv(server, path.join(tmp.dir, "home")), timeoutMs: 180_000 });
    expect(deployed.code, deployed.stderr).toBe(0);
  });
  afterAll(async () => {
    await second?.stop();
    await server?.stop();
    tmp?.cleanup();
  });

  it("still serves a live deployment the server had read (its manifest sealed under the old key), and a connection's token", async () => {
    const workerId = workerIdOf(dir);
    await seedOauthConnection(server.server.store.db, Keyring.fromFile(path.join(server.dataDir, "master.key")), workerId, "linked", Date.now() + 3_600_000);
    // A second server on the data dir (the first opened the manifest when it deployed): it keeps
    // the live deployment's row, its manifest sealed and not opened yet, in memory.
    second = await startTestServer({ dataDir: server.dataDir });
    const listed = await second.call("ListCapabilities", { workerId });
    expect(listed.status).toBe(200);
    // It keeps the connection's row, its tokens sealed, too.
    const token = await second.call("GetOauthToken", { workerId, oauthCapabilityKey: "linked" });
    expect(token.status, JSON.stringify(token.body)).toBe(200);

    const report = await rotateMasterKey({ dataDir: server.dataDir, env: {} });
    expect(report.removedKeyIds).toHaveLength(1);
    // The server reads the key file again when it next seals (at most once a second): a secret of
    // another worker, so this worker's manifest is not read anew for new secrets.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const other = await second.call("CreateWorker", { name: "other" });
    expect(other.status).toBe(200);
    expect((await second.call("UpsertSecrets", { workerId: other.body.worker.workerId, secrets: [{ key: "OTHER_SECRET", value: "other-value" }] })).body).toMatchObject({ updated: ["OTHER_SECRET"] });

    // PullEnv reads the manifest (for its OAuth capabilities), a run the bundle.
    const pulled = await second.call("PullEnv", { workerId });
    expect(pulled.status, JSON.stringify(pulled.body)).toBe(200);
    const again = await second.call("GetOauthToken", { workerId, oauthCapabilityKey: "linked" });
    expect(again.status, JSON.stringify(again.body)).toBe(200);
    expect(again.body.accessToken).toBe(token.body.accessToken);
    const run = await second.call("RunCapability", { workerId, capabilityKey: "ping", args: {} });
    expect(run.body).toMatchObject({ result: "pong" });
    expect(run.status).toBe(200);
  });

  it("still gives the token of a kept connection that has no refresh token, near its expiry", async () => {
    const workerId = workerIdOf(dir);
    const now = Date.now();
    await seedOauthConnection(server.server.store.db, Keyring.fromFile(path.join(server.dataDir, "master.key")), workerId, "linked", now + 120_000);
    // Issued an hour ago, expiring in two minutes, nothing to refresh it with: served as it is.
    await server.server.store.db.updateTable("oauth_connections").set({ has_refresh_token: 0, obtained_at: now - 3_600_000 }).where("worker_id", "=", workerId).execute();
    const third = await startTestServer({ dataDir: server.dataDir });
    try {
      const token = await third.call("GetOauthToken", { workerId, oauthCapabilityKey: "linked" });
      expect(token.status, JSON.stringify(token.body)).toBe(200);
      await rotateMasterKey({ dataDir: server.dataDir, env: {} });
      // As above: the server reads the key file again when it next seals.
      await new Promise((resolve) => setTimeout(resolve, 1100));
      const other = await third.call("CreateWorker", { name: "another" });
      expect((await third.call("UpsertSecrets", { workerId: other.body.worker.workerId, secrets: [{ key: "ANOTHER", value: "v" }] })).status).toBe(200);
      const again = await third.call("GetOauthToken", { workerId, oauthCapabilityKey: "linked" });
      expect(again.status, JSON.stringify(again.body)).toBe(200);
      expect(again.body.accessToken).toBe(token.body.accessToken);
    } finally {
      await third.stop();
    }
  });
});
