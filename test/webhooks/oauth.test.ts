/**
 * Issue 15: events and OAuth together. The seed's worker (its `githubAuth` connection to a real
 * authorization server) gets a webhook whose execute calls the provider's protected API with
 * `accessToken()`: a delivery that arrives after the access token expired still gets a valid one
 * (refreshed by the server before the run).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { until } from "../helpers/cluster.js";
import { startBench, ok, type OAuthBench, type DeployedWorker } from "../helpers/oauth-bench.js";
import { startReceiver } from "../helpers/receiver.js";
import { seedWorkerSource } from "../helpers/seed-worker.js";
import { startProvider, type TestProvider } from "../helpers/start-provider.js";

const TTL_S = 3;

describe("a webhook that calls an OAuth-protected API", () => {
  let bench: OAuthBench;
  let provider: TestProvider;
  let worker: DeployedWorker;
  let receiver: Awaited<ReturnType<typeof startReceiver<{ deliveryId: string; status: number; repos: string[] }>>>;
  let reported: { deliveryId: string; status: number; repos: string[] }[] = [];
  let url: string;

  const deliver = async (body: unknown) => {
    const answer = await fetch(url, { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" } });
    expect(answer.status).toBe(202);
    const { deliveryId } = (await answer.json()) as { deliveryId: string };
    await until("the delivery's report", () => reported.some((r) => r.deliveryId === deliveryId), 20_000);
    return reported.find((r) => r.deliveryId === deliveryId)!;
  };

  beforeAll(async () => {
    receiver = await startReceiver((text) => JSON.parse(text) as { deliveryId: string; status: number; repos: string[] });
    reported = receiver.received;
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
      await fetch(${JSON.stringify(receiver.url)}, { method: "POST", body: JSON.stringify({ deliveryId: event.deliveryId, status: response.status, repos }) });
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
    await receiver?.close();
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
