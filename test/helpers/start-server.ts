import fs from "node:fs";
import path from "node:path";
import { PassThrough } from "node:stream";
import { startServer, type RunningServer, type ServerOptions } from "../../packages/server/src/main.js";
import { freshSchema } from "./pg.js";
import { seedInstalledFixture, seedServerNpmCache } from "./fixture-worker.js";
import { tempDir } from "./tmp.js";

export type TestDialect = "sqlite" | "postgres";

export interface TestServer {
  url: string;
  dataDir: string;
  adminToken: string;
  workspaceId: string;
  server: RunningServer;
  /** Everything the server logged so far. */
  logs(): string;
  /** Calls an action with the admin token (or another); answers status and parsed body. */
  call(action: string, body?: unknown, token?: string | null): Promise<{ status: number; body: any }>;
  stop(): Promise<void>;
}

/**
 * A real server in this process on 127.0.0.1, port 0, with a fresh data dir (and, for postgres, a
 * fresh schema). The caller stops it.
 */
export async function startTestServer(
  options: {
    dialect?: TestDialect;
    /** The fixture's installed tree in place (default): false for tests of the install itself. */
    installedFixture?: boolean;
  } & ServerOptions = {},
): Promise<TestServer> {
  const { dialect = "sqlite", installedFixture = true, ...rest } = options;
  const tmp = tempDir("wy-server-");
  // Given a data dir (another test server's, say), the server starts on it as it is.
  const dataDir = rest.dataDir ?? tmp.dir;
  if (!rest.dataDir) seedServerNpmCache(dataDir);
  const schema = dialect === "postgres" ? await freshSchema() : undefined;
  const logStream = new PassThrough();
  let logText = "";
  logStream.on("data", (chunk: Buffer) => {
    logText += chunk.toString("utf8");
  });
  let server: RunningServer;
  try {
    server = await startServer({
      host: "127.0.0.1",
      port: 0,
      dataDir,
      logStream,
      logLevel: "info",
      // Tests of on-demand refresh count provider requests: background refresh is opt-in here.
      backgroundRefresh: false,
      // The tests' providers and resource APIs listen on 127.0.0.1, which the egress policy denies
      // by default: allowed here, as an operator would with --egress-allow. Tests of the policy
      // pass rules of their own.
      egressAllow: ["127.0.0.1"],
      ...(schema ? { databaseUrl: schema.url } : {}),
      ...rest,
    });
  } catch (error) {
    // A server that failed to start leaves nothing behind: no schema, no data dir.
    await schema?.drop().catch(() => {});
    tmp.cleanup();
    throw error;
  }
  // After the start: the registry, part of the tree's hash, is the server's configuration.
  if (installedFixture && !rest.dataDir) seedInstalledFixture(dataDir, server.config.npmRegistry);
  const adminToken = fs.readFileSync(path.join(dataDir, "admin-token"), "utf8").trim();
  const call: TestServer["call"] = async (action, body = {}, token = adminToken) => {
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (token) headers.authorization = `Bearer ${token}`;
    const response = await fetch(`${server.url}/api/v3/workers${action}`, { method: "POST", headers, body: JSON.stringify(body) });
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // keep the text
    }
    return { status: response.status, body: parsed };
  };
  return {
    url: server.url,
    dataDir,
    adminToken,
    workspaceId: server.bootstrap.workspace.id,
    server,
    logs: () => logText,
    call,
    async stop() {
      await server.stop();
      await schema?.drop();
      tmp.cleanup();
    },
  };
}
