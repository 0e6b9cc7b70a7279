/**
 * Issue 13, fix 5: two OAuth callbacks for one capability at once (two browser tabs, a retried
 * redirect) both store their tokens; neither answers 500 on the key's uniqueness.
 */
import { describe, expect, it } from "vitest";
import * as oauthStore from "../../packages/server/src/store/oauth.js";
import { DIALECTS } from "../helpers/dialects.js";
import { startTestServer } from "../helpers/start-server.js";

describe.each(DIALECTS)("connections written by two callbacks at once (%s)", (dialect) => {
  it("both writes succeed, one after the other, and the version counts both", async () => {
    const server = await startTestServer({ dialect });
    try {
      const { db } = server.server.store;
      const created = await server.call("CreateWorker", { name: "w", uploadType: "source" });
      const workerId = created.body.worker.workerId as string;
      const row = (sealed: string) => ({
        worker_id: workerId,
        capability_key: "githubAuth",
        workspace_id: server.workspaceId,
        status: "connected" as const,
        key_id: "k",
        sealed: Buffer.from(sealed),
        has_refresh_token: 1,
        access_expires_at: null,
        expiry_source: "none" as const,
        connected_at: 1,
        obtained_at: 1,
        last_refresh_at: null,
        next_refresh_at: null,
        last_error: null,
        last_error_at: null,
        last_error_kind: null,
        failure_count: 0,
        lease_owner: null,
        lease_expires_at: null,
        updated_at: 1,
      });
      const versions = await Promise.all([oauthStore.replaceConnection(db, row("first")), oauthStore.replaceConnection(db, row("second"))]);
      expect([...versions].sort()).toEqual([1, 2]);
      const stored = await oauthStore.findConnection(db, workerId, "githubAuth");
      expect(stored?.version).toBe(2);
      expect(["first", "second"]).toContain(Buffer.from(stored!.sealed).toString());
    } finally {
      await server.stop();
    }
  });
});
