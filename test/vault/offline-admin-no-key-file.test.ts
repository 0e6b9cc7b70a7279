/**
 * Security review, low finding: `ntn server workspace create` without WORKYARD_MASTER_KEY wrote a
 * stray master.key beside a server that uses the environment's key. Offline admin commands never
 * create a key file: creating a workspace needs no key (tokens are stored as hashes), and a command
 * that does need one says which to provide.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ConfigError, createWorkspaceOffline, KeyringError, rotateMasterKey } from "../../packages/server/src/main.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { tempDir } from "../helpers/tmp.js";

const masterKey = () => crypto.randomBytes(32).toString("base64");

describe("offline admin commands and the master key file", () => {
  let server: TestServer | undefined;
  afterEach(async () => {
    await server?.stop();
    server = undefined;
  });

  it("workspace create on the data dir of a server keyed by WORKYARD_MASTER_KEY writes no master.key", async () => {
    const key = masterKey();
    server = await startTestServer({ masterKeys: key });
    const { dataDir } = server;
    const keyFile = path.join(dataDir, "master.key");
    expect(fs.existsSync(keyFile)).toBe(false);
    // Sealed data in the store: a secret under the environment's key.
    const worker = await server.call("CreateWorker", { name: "sealed" });
    expect((await server.call("UpsertSecrets", { workerId: worker.body.worker.workerId, secrets: [{ key: "A", value: "b" }] })).status).toBe(200);

    // As an operator would run it, without the server's environment.
    const created = await createWorkspaceOffline({ dataDir, name: "Second team", env: {} });
    expect(fs.existsSync(keyFile)).toBe(false);
    expect(fs.readdirSync(dataDir).filter((name) => name.includes("key"))).toEqual([]);
    expect(created.tokenFile).toBe(path.join(dataDir, "workspaces", `${created.workspaceId}.token`));
    const token = fs.readFileSync(created.tokenFile, "utf8").trim();

    // The running server (same store) accepts the new workspace's token.
    const me = await server.call("WhoAmI", {}, token);
    expect(me.status).toBe(200);
    expect(me.body).toMatchObject({ workspaceId: created.workspaceId, workspaceName: "Second team" });
  });

  it("rotate-key without any key says which key to provide, and writes no master.key", async () => {
    server = await startTestServer({ masterKeys: masterKey() });
    const { dataDir } = server;
    const rotation = rotateMasterKey({ dataDir, env: {} });
    await expect(rotation).rejects.toBeInstanceOf(KeyringError);
    await expect(rotation).rejects.toThrow(/^Rotating the master key needs the master key, and there is none here: set WORKYARD_MASTER_KEY/);
    expect(fs.existsSync(path.join(dataDir, "master.key"))).toBe(false);
  });

  it("workspace create on a data dir that does not exist fails plainly and creates nothing", async () => {
    const tmp = tempDir("wy-no-data-dir-");
    try {
      const missing = path.join(tmp.dir, "typo");
      await expect(createWorkspaceOffline({ dataDir: missing, name: "Nowhere", env: {} })).rejects.toBeInstanceOf(ConfigError);
      expect(fs.existsSync(missing)).toBe(false);
    } finally {
      tmp.cleanup();
    }
  });

  it("a server still creates its own master.key when it has no key", async () => {
    server = await startTestServer();
    expect(fs.existsSync(path.join(server.dataDir, "master.key"))).toBe(true);
  });
});
