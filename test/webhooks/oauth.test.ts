/**
 * Issue 15: events and OAuth together. The seed's worker (its `githubAuth` connection to a real
 * authorization server) gets a webhook whose execute calls the provider's protected API with
 * `accessToken()`: a delivery that arrives after the access token expired still gets a valid one
 * (refreshed by the server before the run).
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startBench, ok, type OAuthBench, type DeployedWorker } from "../helpers/oauth-bench.js";
import { seedWorkerSource } from "../helpers/seed-worker.js";
import { startProvider, type TestProvider } from "../helpers/start-provider.js";

const TTL_S = 3;

describe("a webhook that calls an OAuth-protected API", () => {
  let bench: OAuthBench;
  let provider: TestProvider;
  let worker: DeployedWorker;
  let receiver: http.Server;
  const reported: { deliveryId: string; status: number; repos: string[] }[] = [];
  let url: string;

  const deliver = async (body: unknown) => {
    const answer = await fetch(url, { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" } });
    expect(answer.status).toBe(202);
    const { deliveryId } = (await answer.json()) as { deliveryId: string };
    const deadline = Date.now() + 20_000;
    for (;;) {
      const got = reported.find((r) => r.deliveryId === deliveryId);
      if (got) return got;
      if (Date.now() > deadline) throw new Error("the delivery never reported");
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  };

  beforeAll(async () => {
    receiver = http.createServer((request, response) => {
      let text = "";
      request.on("data", (chunk: Buffer) => (text += chunk.toString("utf8")));
      request.on("end", () => {
        reported.push(JSON.parse(text));
        response.writeHead(200).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve));
    const receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/`;
    bench = await startBench();
    provider = await startProvider({ redirectUris: [`${bench.server.url}/workers/oauth/callback`], accessTokenTtl: TTL_S });
    const source = seedWorkerSource(provider, {
      moreTools: `
worker.webhook("onEvent", {
  title: "On event",
  description: "Lists the repositories with the connection's token for each event",
  execute: async (events) => {
    for (const event of events) {
      const token = await githubAuth.accessToken();
      const response = await fetch(${JSON.stringify(provider.resourceUrl)}, { headers: { Authorization: \`Bearer \${token}\` } });
      const repos = response.ok ? (await response.json()).map((r) => r.name) : [];
      await fetch(${JSON.stringify(receiverUrl)}, { method: "POST", body: JSON.stringify({ deliveryId: event.deliveryId, status: response.status, repos }) });
    }
  },
});
`,
    });
    worker = await bench.deploy("hooked", source, { GITHUB_CLIENT_ID: provider.clientId, GITHUB_CLIENT_SECRET: provider.clientSecret });
    const { page } = await bench.connect(worker.workerId);
    expect(page.status, page.text).toBe(200);
    const listed = JSON.parse(ok(await bench.cli(["workers", "webhooks", "list", "--json"], { cwd: worker.dir })).stdout) as { key: string; url: string }[];
    url = listed.find((w) => w.key === "onEvent")!.url;
  }, 240_000);
  afterAll(async () => {
    await bench?.stop();
    await provider?.stop();
    await new Promise((resolve) => receiver?.close(resolve));
  });

  it("runs with a valid access token, and with a refreshed one after the first expired", async () => {
    const first = await deliver({ n: 1 });
    expect(first).toMatchObject({ status: 200, repos: ["repo-one", "repo-two"] });
    const refreshesBefore = provider.grants.success.refresh_token ?? 0;
    await new Promise((resolve) => setTimeout(resolve, TTL_S * 1000 + 1000));
    const second = await deliver({ n: 2 });
    expect(second).toMatchObject({ status: 200, repos: ["repo-one", "repo-two"] });
    expect(provider.grants.success.refresh_token ?? 0).toBeGreaterThan(refreshesBefore);
  });
});
