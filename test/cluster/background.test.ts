/**
 * Background refresh on a cluster: two processes run the refresher. A short-lived token is renewed
 * before it expires without any request, exactly once per token (each refresh sends the refresh
 * token the previous one got), and a long-lived one is renewed on the keep-alive schedule.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { resourceStatus, scaffoldProjects, startCluster, until, type Cluster, type Projects } from "../helpers/cluster.js";
import { authorizeOverHttp, openPage } from "../helpers/http-browser.js";
import { oauthWorkerSource } from "../helpers/oauth-bench.js";
import { postgresAvailable } from "../helpers/pg.js";
import { startQuirkProxy, type QuirkProxy } from "../helpers/quirk-proxy.js";
import type { ServerProcess } from "../helpers/server-process.js";
import { startProvider, type TestProvider } from "../helpers/start-provider.js";

const hasPg = await postgresAvailable();

const TTL_S = 6;
const KEY = "githubAuth";

let cluster: Cluster;
let projects: Projects;
const stops: (() => Promise<void>)[] = [];

interface Status {
  status: string;
  expiresAt: string;
  connectedAt: string;
  lastRefreshAt: string | null;
  nextRefreshAt: string | null;
  lastError: string | null;
}

/** A provider behind a counting proxy, whose client accepts the callbacks of `processes`. */
async function oauthFor(processes: ServerProcess[], accessTokenTtl: number): Promise<{ provider: TestProvider; proxy: QuirkProxy }> {
  const proxy = await startQuirkProxy();
  const provider = await startProvider({ redirectUris: processes.map((p) => `${p.url}/workers/oauth/callback`), accessTokenTtl, rotateRefreshToken: true });
  proxy.target = provider.tokenEndpoint;
  stops.push(() => proxy.stop(), () => provider.stop());
  return { provider, proxy };
}

/** A worker deployed through `proc`, with its client secrets, connected over HTTP. */
async function connectedWorker(proc: ServerProcess, name: string, provider: TestProvider, proxy: QuirkProxy): Promise<string> {
  const dir = projects.project(name, oauthWorkerSource({ authorizationEndpoint: provider.authorizationEndpoint, tokenEndpoint: proxy.tokenEndpoint, resourceUrl: provider.resourceUrl }));
  const workerId = await projects.deploy(proc.url, dir);
  const secrets = await cluster.call(proc, "UpsertSecrets", {
    workerId,
    secrets: [
      { key: "GITHUB_CLIENT_ID", value: provider.clientId },
      { key: "GITHUB_CLIENT_SECRET", value: provider.clientSecret },
    ],
  });
  expect(secrets.status, JSON.stringify(secrets.body)).toBe(200);
  const started = await cluster.call(proc, "StartOauth", { workerId, oauthCapabilityKey: KEY });
  expect(started.status, JSON.stringify(started.body)).toBe(200);
  const outcome = await authorizeOverHttp(started.body.authorizationUrl, { callbackPrefix: `${proc.url}/workers/oauth/callback` });
  const page = await openPage(outcome.callbackUrl!);
  expect(page.status, page.text).toBe(200);
  return workerId;
}

async function statusOf(proc: ServerProcess, workerId: string): Promise<Status> {
  const answer = await cluster.call(proc, "GetOauthStatus", { workerId, oauthCapabilityKey: KEY });
  expect(answer.status, JSON.stringify(answer.body)).toBe(200);
  return answer.body.connections[0] as Status;
}

/**
 * Every refresh sent the refresh token the provider issued just before (the code exchange's for the
 * first): one refresh per token, none twice (a refresh token sent twice is also refused by this
 * provider, which rotates them), and none failed.
 */
function expectOneRefreshPerToken(proxy: QuirkProxy, provider: TestProvider): number {
  const sent = proxy.requests.filter((r) => r.grantType === "refresh_token").map((r) => r.refreshToken);
  const issued = proxy.answers.map((a) => a.refreshToken);
  expect(proxy.answers.map((a) => a.status).every((s) => s === 200)).toBe(true);
  expect(issued.length).toBe(sent.length + 1);
  expect(sent).toEqual(issued.slice(0, -1));
  expect(new Set(sent).size).toBe(sent.length);
  expect(provider.grants.error.refresh_token ?? 0).toBe(0);
  return sent.length;
}

describe.skipIf(!hasPg)("background refresh on two processes", () => {
  beforeAll(async () => {
    cluster = await startCluster(2, { backgroundRefresh: true });
    projects = await scaffoldProjects(cluster);
  }, 240_000);

  afterAll(async () => {
    await cluster?.stop();
    for (const stop of stops) await stop();
    projects?.cleanup();
  });

  it("refreshes a short-lived token before it expires, with no request, once per token across both processes", async () => {
    const [P, Q] = cluster.processes as [ServerProcess, ServerProcess];
    const { provider, proxy } = await oauthFor([P, Q], TTL_S);
    const workerId = await connectedWorker(P, "short-lived", provider, proxy);
    const first = await statusOf(Q, workerId);
    expect(first).toMatchObject({ status: "connected", lastRefreshAt: null });
    // Due half its lifetime before it expires (min(5 minutes, half the lifetime)).
    expect(Date.parse(first.nextRefreshAt!)).toBe(Date.parse(first.expiresAt) - (TTL_S * 1000) / 2);

    // Nobody asks for the token from here on: only the status is read, which never refreshes.
    // Three refreshes seen (each due half a lifetime, 3 s, after the last) end the watch; the
    // deadline leaves room for a loaded machine.
    const seen: Status[] = [first];
    const deadline = Date.now() + 4 * TTL_S * 1000;
    while (seen.length < 4 && Date.now() < deadline) {
      const now = await statusOf(seen.length % 2 ? P : Q, workerId);
      if (now.lastRefreshAt !== seen.at(-1)!.lastRefreshAt) seen.push(now);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const refreshes = expectOneRefreshPerToken(proxy, provider);
    expect(refreshes).toBeGreaterThanOrEqual(3);
    // Every refresh was seen in the status (they are seconds apart), each one after the previous
    // token came due and before it expired, and each moved lastRefreshAt, nextRefreshAt and expiresAt.
    expect(seen.length - 1).toBe(refreshes);
    for (let i = 1; i < seen.length; i++) {
      const previous = seen[i - 1]!;
      const current = seen[i]!;
      const refreshedAt = Date.parse(current.lastRefreshAt!);
      expect(current).toMatchObject({ status: "connected", lastError: null });
      expect(refreshedAt).toBeGreaterThanOrEqual(Date.parse(previous.nextRefreshAt!));
      expect(refreshedAt).toBeLessThan(Date.parse(previous.expiresAt));
      expect(Date.parse(current.nextRefreshAt!)).toBeGreaterThan(Date.parse(previous.nextRefreshAt!));
      expect(Date.parse(current.expiresAt)).toBeGreaterThan(Date.parse(previous.expiresAt));
    }
    // The token the processes hold now is the last one issued, and the API accepts it.
    const token = await cluster.call(P, "GetOauthToken", { workerId, oauthCapabilityKey: KEY });
    expect(token.status, JSON.stringify(token.body)).toBe(200);
    expect(token.body.accessToken).toBe(proxy.answers.at(-1)!.accessToken);
    expect(await resourceStatus(provider.resourceUrl, token.body.accessToken)).toBe(200);

    // Disconnected, so the next test's processes leave it alone.
    expect((await cluster.call(P, "RevokeOauth", { workerId, oauthCapabilityKey: KEY })).status).toBe(200);
  });

  it("with --refresh-keep-alive 3s, refreshes a long-lived token on the keep-alive schedule", async () => {
    for (const proc of cluster.processes) await proc.kill("SIGTERM");
    const args = ["--refresh-keep-alive", "3s"];
    const P = await cluster.start({ backgroundRefresh: true, args });
    const Q = await cluster.start({ backgroundRefresh: true, args });
    const { provider, proxy } = await oauthFor([P, Q], 3600);
    const workerId = await connectedWorker(Q, "long-lived", provider, proxy);
    const first = await statusOf(P, workerId);
    // An hour to live, but the refresh token is renewed 3 s after it was obtained.
    expect(Date.parse(first.expiresAt) - Date.parse(first.connectedAt)).toBe(3600 * 1000);
    expect(Date.parse(first.nextRefreshAt!) - Date.parse(first.connectedAt)).toBe(3000);

    await until("two keep-alive refreshes", () => proxy.requests.filter((r) => r.grantType === "refresh_token").length >= 2, 30_000, 100);
    await until("the second one to be stored", async () => (await statusOf(P, workerId)).lastRefreshAt !== null && proxy.answers.length >= 3, 10_000, 100);
    const now = await statusOf(Q, workerId);
    expect(now).toMatchObject({ status: "connected", lastError: null });
    expect(Date.parse(now.nextRefreshAt!) - Date.parse(now.lastRefreshAt!)).toBe(3000);
    expect(Date.parse(now.expiresAt) - Date.parse(now.lastRefreshAt!)).toBe(3600 * 1000);
    expectOneRefreshPerToken(proxy, provider);
    const token = await cluster.call(P, "GetOauthToken", { workerId, oauthCapabilityKey: KEY });
    expect(token.status).toBe(200);
    expect(await resourceStatus(provider.resourceUrl, token.body.accessToken)).toBe(200);
  });
});
