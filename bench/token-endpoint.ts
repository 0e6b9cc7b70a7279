/** A token endpoint of the bench's own on 127.0.0.1: answers refresh grants after a set latency, and counts them. */
import crypto from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";

export async function tokenEndpoint(latencyMs: number, expiresIn = 3600) {
  const state = { requests: 0 };
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      state.requests += 1;
      setTimeout(() => {
        res.setHeader("content-type", "application/json");
        res.end(
          JSON.stringify({
            access_token: crypto.randomBytes(24).toString("base64url"),
            token_type: "Bearer",
            expires_in: expiresIn,
            refresh_token: crypto.randomBytes(24).toString("base64url"),
          }),
        );
      }, latencyMs);
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    origin,
    tokenUrl: `${origin}/token`,
    get requests() {
      return state.requests;
    },
    reset() {
      state.requests = 0;
    },
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A worker with one OAuth capability whose endpoints are the bench's. */
export function oauthWorker(origin: string): string {
  return `import { Worker } from "@notionhq/workers";
import { j } from "@notionhq/workers/schema-builder";
const worker = new Worker();
export default worker;
const auth = worker.oauth("benchAuth", {
  name: "bench-oauth",
  authorizationEndpoint: "${origin}/authorize",
  tokenEndpoint: "${origin}/token",
  scope: "read",
  clientId: process.env.BENCH_CLIENT_ID ?? "",
  clientSecret: process.env.BENCH_CLIENT_SECRET ?? "",
});
worker.tool("token", { title: "Token", description: "Length of the token", schema: j.object({}), execute: async () => ({ length: (await auth.accessToken()).length }) });
`;
}
