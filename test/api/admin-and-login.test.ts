import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "../helpers/start-server.js";

describe("admin actions and the CLI login page", () => {
  let server: TestServer;
  let memberToken: string;
  beforeAll(async () => {
    server = await startTestServer();
    memberToken = (await server.call("CreateToken", { name: "member" })).body.token;
  });
  afterAll(async () => server?.stop());

  it("RotateKey needs the admin token, re-seals every secret, and keeps them readable", async () => {
    const { body } = await server.call("CreateWorker", { name: "rotate", uploadType: "source" });
    const workerId = body.worker.workerId;
    await server.call("UpsertSecrets", { workerId, secrets: [{ key: "A", value: "alpha" }, { key: "B", value: "beta" }] });
    const keyFile = path.join(server.dataDir, "master.key");
    const before = fs.readFileSync(keyFile, "utf8");

    const refused = await server.call("RotateKey", {}, memberToken);
    expect(refused.status).toBe(403);
    expect(refused.body.code).toBe("forbidden");

    const rotated = await server.call("RotateKey", {});
    expect(rotated.status).toBe(200);
    expect(rotated.body.source).toBe("file");
    expect(rotated.body.resealed.secrets).toBeGreaterThanOrEqual(2);
    const after = fs.readFileSync(keyFile, "utf8");
    expect(after).not.toBe(before);
    expect(after.trim().split("\n")).toHaveLength(1);
    expect((fs.statSync(keyFile).mode & 0o777).toString(8)).toBe("600");

    const pulled = await server.call("PullEnv", { workerId });
    expect(pulled.body.env).toEqual([
      { key: "A", value: "alpha" },
      { key: "B", value: "beta" },
    ]);
  });

  it("CreateWorkspace needs the admin token; the new workspace's token sees only its own workers", async () => {
    expect((await server.call("CreateWorkspace", { name: "Team B" }, memberToken)).status).toBe(403);
    const created = await server.call("CreateWorkspace", { name: "Team B" });
    expect(created.status).toBe(200);
    const me = await server.call("WhoAmI", {}, created.body.token);
    expect(me.body).toMatchObject({ workspaceId: created.body.workspaceId, workspaceName: "Team B" });
    expect((await server.call("ListWorkers", {}, created.body.token)).body.workers).toEqual([]);
  });

  it("logs a CLI in through the approval page: init, approve with a token, redeem once", async () => {
    const init = await server.call("CliLoginInit", {}, null);
    expect(init.status).toBe(200);
    const { sessionId, browserUrl, verificationCode } = init.body;
    expect(browserUrl.startsWith(`${server.url}/cli-login/`)).toBe(true);
    // The page's URL does not carry the session id that redeems.
    expect(browserUrl).not.toContain(sessionId);
    expect((await server.call("CliLoginRedeem", { sessionId }, null)).body).toEqual({ status: "pending" });

    const page = await fetch(browserUrl);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain(verificationCode);

    const form = (token: string) =>
      fetch(browserUrl, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: new URLSearchParams({ token }) });
    const wrong = await form("wy_not-a-token");
    expect(wrong.status).toBe(401);
    expect(await wrong.text()).toContain("Not approved");

    const approved = await form(memberToken);
    expect(approved.status).toBe(200);
    const approvedText = await approved.text();
    expect(approvedText).toContain("Approved");
    expect(approvedText).not.toContain(memberToken);

    const redeemed = await server.call("CliLoginRedeem", { sessionId }, null);
    expect(redeemed.body).toMatchObject({ status: "confirmed", spaceId: server.workspaceId });
    const me = await server.call("WhoAmI", {}, redeemed.body.token);
    expect(me.status).toBe(200);
    expect(redeemed.body.token).not.toBe(memberToken);
    // Single use.
    expect((await server.call("CliLoginRedeem", { sessionId }, null)).body).toEqual({ status: "expired" });
    expect((await form(memberToken)).status).toBe(410);
  });

  it("an unknown login link shows a plain page", async () => {
    const page = await fetch(`${server.url}/cli-login/nope`);
    expect(page.status).toBe(404);
    expect(await page.text()).toContain("unknown or has expired");
  });
});
