/**
 * Issue 13, fix 3: a deleted worker's warm processes (which hold its decrypted secrets) stop at
 * once on the server process that deleted it, and on another process of a cluster at its next
 * request for the worker.
 */
import fs from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DIALECTS } from "../helpers/dialects.js";
import { scaffoldProjects, startCluster, type Cluster, type Projects } from "../helpers/cluster.js";

const SOURCE = `import { Worker } from "@notionhq/workers";
import { j } from "@notionhq/workers/schema-builder";
const worker = new Worker();
export default worker;
worker.tool("ping", { title: "ping", description: "pong", schema: j.object({}), execute: async () => "pong" });
`;

/** Worker processes of a server's data dir alive now, as the host sees them (their bundle comes from its deployments folder). */
function processesOf(dataDir: string): number {
  let count = 0;
  for (const entry of fs.readdirSync("/proc").filter((e) => /^\d+$/.test(e))) {
    try {
      if (!fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").includes("/workyard/child.mjs")) continue;
      if (fs.readFileSync(`/proc/${entry}/mountinfo`, "utf8").includes(`${dataDir}/deployments/`)) count += 1;
    } catch {
      // gone meanwhile
    }
  }
  return count;
}

async function until(check: () => boolean, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return check();
}

describe.skipIf(!DIALECTS.includes("postgres"))("deleting a worker stops its processes (two processes on one PostgreSQL)", () => {
  let cluster: Cluster;
  let projects: Projects;

  beforeAll(async () => {
    cluster = await startCluster(2);
    projects = await scaffoldProjects(cluster);
  });
  afterAll(async () => {
    await cluster?.stop();
    projects?.cleanup();
  });

  it("on the process that deleted it at once, and on the other at its next request for the worker", async () => {
    const [a, b] = cluster.processes as [(typeof cluster.processes)[0], (typeof cluster.processes)[0]];
    const workerId = await projects.deploy(a.url, projects.project("doomed", SOURCE));
    for (const proc of [a, b]) {
      const ran = await cluster.call(proc, "RunCapability", { workerId, capabilityKey: "ping", args: {} });
      expect(ran.status, JSON.stringify(ran.body)).toBe(200);
      expect(processesOf(proc.dataDir)).toBeGreaterThan(0);
    }
    expect((await cluster.call(a, "DeleteWorker", { workerId })).status).toBe(200);
    expect(await until(() => processesOf(a.dataDir) === 0)).toBe(true);
    // B still runs one until it hears of the worker again.
    expect(processesOf(b.dataDir)).toBeGreaterThan(0);
    expect((await cluster.call(b, "RunCapability", { workerId, capabilityKey: "ping", args: {} })).status).toBe(404);
    expect(await until(() => processesOf(b.dataDir) === 0)).toBe(true);
  });
});
