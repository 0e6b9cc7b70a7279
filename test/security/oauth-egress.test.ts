/**
 * Issue 12, finding M4: a manifest names the token endpoint, so without a policy the server would
 * POST client credentials and the PKCE verifier to any loopback port, and its error messages
 * would tell an open port from a closed one. The server's own calls obey the egress policy, and
 * a failure to get an answer reads the same whatever the port.
 */
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliEnv, fixtureDeps, workerIdOf, writeProject } from "../build-run/fixtures.js";
import { ntn } from "../helpers/run-ntn.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { tempDir } from "../helpers/tmp.js";

const worker = (ports: Record<string, number>) => `import { Worker } from "@notionhq/workers";
const worker = new Worker();
export default worker;
${Object.entries(ports)
  .map(
    ([key, port]) => `worker.oauth(${JSON.stringify(key)}, {
  name: ${JSON.stringify(key)},
  authorizationEndpoint: "http://127.0.0.1:${port}/authorize",
  tokenEndpoint: "http://127.0.0.1:${port}/token",
  callbackUrl: "http://127.0.0.1:9/elsewhere",
  scope: "read",
  clientId: "cid",
  clientSecret: "client-secret-canary",
});`,
  )
  .join("\n")}
`;

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as net.AddressInfo).port;
}

describe("the server's own OAuth calls obey the egress policy (M4)", () => {
  let server: TestServer;
  let tmp: { dir: string; cleanup(): void };
  let workerId: string;
  let deniedHits = 0;
  const denied = http.createServer((_req, res) => {
    deniedHits += 1;
    res.end("{}");
  });
  // Open, and speaking another protocol (as Redis would).
  const garbage = net.createServer((socket) => socket.end("-ERR unknown command\r\n", () => socket.destroy()));
  const ports: Record<string, number> = {};

  /** Starts a flow and brings a (made-up) code back to the callback: the server then calls the token endpoint. */
  async function exchange(key: string): Promise<{ status: string; error?: string; hint?: string }> {
    const started = await server.call("StartOauth", { workerId, oauthCapabilityKey: key });
    expect(started.status, JSON.stringify(started.body)).toBe(200);
    const authorize = new URL(started.body.authorizationUrl);
    // The redirect URI is the server's own, whatever the manifest's callbackUrl says.
    expect(authorize.searchParams.get("redirect_uri")).toBe(`${server.url}/workers/oauth/callback`);
    await fetch(`${server.url}/workers/oauth/callback?code=made-up-code&state=${encodeURIComponent(started.body.state)}`);
    const flow = await server.call("GetOauthFlow", { workerId, state: started.body.state });
    return flow.body;
  }

  beforeAll(async () => {
    ports.deniedAuth = await listen(denied);
    ports.garbageAuth = await listen(garbage);
    const closed = net.createServer();
    ports.closedAuth = await listen(closed);
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    // Only the garbage and closed ports are allowed; the denied one is plain loopback.
    server = await startTestServer({ egressAllow: [`127.0.0.1:${ports.garbageAuth}`, `127.0.0.1:${ports.closedAuth}`] });
    tmp = tempDir("wy-oauth-egress-");
    const deps = fixtureDeps();
    const dir = writeProject(path.join(tmp.dir, "w"), deps, worker(ports));
    const deployed = await ntn(["workers", "deploy", "--name", "oauth-egress"], { cwd: dir, env: cliEnv(server, path.join(tmp.dir, "home")), timeoutMs: 180_000 });
    expect(deployed.code, deployed.stderr).toBe(0);
    workerId = workerIdOf(dir);
  });
  afterAll(async () => {
    await server?.stop();
    denied.closeAllConnections();
    await Promise.all([denied, garbage].map((s) => new Promise((resolve) => s.close(resolve))));
    tmp?.cleanup();
  });

  it("a token endpoint on a loopback port nobody allowed is never called; the flow fails naming the policy", async () => {
    const flow = await exchange("deniedAuth");
    expect(flow.status).toBe("failed");
    expect(flow.error).toMatch(new RegExp(`egress denied: 127\\.0\\.0\\.1:${ports.deniedAuth} is a loopback address; allow it with --egress-allow`));
    expect(deniedHits).toBe(0);
  });

  it("a closed port and an open one speaking another protocol fail with the same words", async () => {
    const closed = await exchange("closedAuth");
    const open = await exchange("garbageAuth");
    expect(closed.status).toBe("failed");
    expect(open.status).toBe("failed");
    expect(closed.error).toMatch(/Could not get an HTTP answer from the provider/);
    expect(open.error).toBe(closed.error);
    expect(open.hint).toBe(closed.hint);
    expect(server.logs()).not.toContain("client-secret-canary");
  });
});
