/**
 * Runs share worker processes, and a run past its time limit stops its process: who is to blame
 * for each run that ends with it? A run whose own limit passed is (its own time limit, counted); a
 * run stopped for another's is "collateral" (a webhook delivery's attempt is then not counted) only
 * when the process's event loop still turned at that limit, which shows that the run whose limit
 * passed is the one that never ended. When a run spins, every run in the process is held and the
 * first limit to pass may be another's: no run is collateral then. Driven on SandboxProcess itself,
 * with a worker that is a plain module (no SDK), without namespaces: blame is the process's logic.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Isolation } from "../../packages/server/src/executor/isolation.js";
import { childEntry, SandboxProcess, type RunOutcome } from "../../packages/server/src/executor/sandbox.js";
import { tempDir } from "../helpers/tmp.js";

const WORKER = `const busy = (ms) => { const end = Date.now() + ms; while (Date.now() < end) {} };
export default {
  manifest: { capabilities: [] },
  async run(key) {
    if (key === "hang") return new Promise(() => {});
    if (key === "spin") for (;;) {}
    if (key === "spin-later") { await new Promise((resolve) => setTimeout(resolve, 380)); for (;;) {} }
    // Spins, printing as it goes: its output arrives, its event loop never turns.
    if (key === "spin-printing") for (;;) { busy(50); console.log("still spinning"); }
    return "ok";
  },
};
`;

const plain = { kind: "none", host: undefined, privileged: false, problems: [], refusal: undefined, cpu: undefined, userFor: () => undefined, describe: () => "none" } as Isolation;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("blame at a time limit, in a shared process", () => {
  let tmp: { dir: string; cleanup(): void };
  let n = 0;
  const processes: SandboxProcess[] = [];

  beforeAll(() => {
    tmp = tempDir("wy-blame-");
    fs.mkdirSync(path.join(tmp.dir, "bundle"));
    fs.mkdirSync(path.join(tmp.dir, "node_modules"));
    fs.writeFileSync(path.join(tmp.dir, "bundle", "index.mjs"), WORKER);
  });
  afterAll(() => {
    for (const p of processes) p.kill();
    tmp?.cleanup();
  });

  const start = async () => {
    const p = await SandboxProcess.start({
      entry: childEntry(),
      bundleDir: path.join(tmp.dir, "bundle"),
      nodeModules: path.join(tmp.dir, "node_modules"),
      scratchDir: path.join(tmp.dir, `scratch-${++n}`),
      env: {},
      memoryMb: 128,
      isolation: plain,
      user: undefined,
      egressSocket: undefined,
      cpuCores: 1,
    });
    processes.push(p);
    return (runId: string, key: string, timeoutMs: number) => p.run({ runId, key, input: {}, env: {}, timeoutMs, onLog: () => {} });
  };
  const blame = (outcome: RunOutcome) => {
    expect(outcome.ok).toBe(false);
    if (outcome.ok) return undefined;
    return { collateral: outcome.collateral === true, own: /exceeded its time limit/.test(outcome.error.message) };
  };

  it("a run that never ends, its loop free: it is to blame, the run beside it is collateral", async () => {
    const run = await start();
    const hanging = run("hang-1", "hang", 1000);
    await sleep(300);
    const beside = run("beside-1", "hang", 10_000);
    expect(blame(await hanging)).toEqual({ collateral: false, own: true });
    expect(blame(await beside)).toEqual({ collateral: true, own: false });
  });

  it("two runs whose limits pass together: both are to blame", async () => {
    const run = await start();
    const [first, second] = await Promise.all([run("both-1", "hang", 1000), run("both-2", "hang", 1000)]);
    expect(blame(first)).toEqual({ collateral: false, own: true });
    expect(blame(second)).toEqual({ collateral: false, own: true });
  });

  it("signs of life sent before the limit and read after it are no proof that the loop is free", async () => {
    const run = await start();
    const waiting = run("waiting-stale", "hang", 1000);
    await sleep(550);
    // Free for 380 ms (signs of life go out), then spins; the server reads them only after the
    // limit, its own loop held meanwhile.
    const spinning = run("spinning-stale", "spin-later", 10_000);
    await sleep(50);
    // Held in a callback of the loop's check phase: its next turn runs the due timers (the limit)
    // before it reads what arrived meanwhile.
    await new Promise<void>((resolve) =>
      setImmediate(() => {
        const until = performance.now() + 500;
        while (performance.now() < until) {
          // the server's thread busy across the waiting run's limit
        }
        resolve();
      }),
    );
    expect(blame(await waiting)).toEqual({ collateral: false, own: true });
    expect(blame(await spinning)).toEqual({ collateral: false, own: false });
  });

  for (const key of ["spin", "spin-printing"]) {
    it(`a run that spins (${key}) beside a waiting one whose limit passes first: neither is collateral`, async () => {
      const run = await start();
      const waiting = run(`waiting-${key}`, "hang", 1000);
      // Late: it has spun for less than the second after which the process would look stuck.
      await sleep(600);
      const spinning = run(`spinning-${key}`, key, 10_000);
      expect(blame(await waiting)).toEqual({ collateral: false, own: true });
      expect(blame(await spinning)).toEqual({ collateral: false, own: false });
    });
  }
});
