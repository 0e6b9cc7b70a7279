// The client side of bench/egress.ts, in a process of its own as a worker's would be: fetches an
// upstream for a while at a given concurrency, directly or (with a socket) through the egress
// gateway as the sandbox routes it, and prints the latencies' stats as one JSON line.
import { stats } from "./load.mjs";

const [url, concurrency, durationMs, socketPath, clientModule, undiciDir] = process.argv.slice(2);
if (socketPath) {
  const { routeThroughGateway } = await import(clientModule);
  routeThroughGateway(socketPath, undiciDir);
}

async function once() {
  const response = await fetch(url);
  const text = await response.text();
  if (response.status !== 200 || text !== '{"ok":true}') throw new Error(`unexpected answer ${response.status}: ${text}`);
}

// Warm up (the first fetch loads undici; keep-alive connections open), then measure.
for (let i = 0; i < 50; i++) await once();
const samples = [];
const started = performance.now();
const until = started + Number(durationMs);
await Promise.all(
  Array.from({ length: Number(concurrency) }, async () => {
    while (performance.now() < until) {
      const t0 = performance.now();
      await once();
      samples.push(performance.now() - t0);
    }
  }),
);
process.stdout.write(`${JSON.stringify(stats(samples, performance.now() - started))}\n`);
