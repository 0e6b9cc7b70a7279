// The load generator, in plain JavaScript so a worker thread can run it without a TypeScript loader.
import http from "node:http";

/** @param {number[]} samplesMs @param {number} wallMs */
export function stats(samplesMs, wallMs) {
  const sorted = [...samplesMs].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
  return {
    count: sorted.length,
    p50: at(0.5),
    p99: at(0.99),
    mean: sorted.reduce((a, b) => a + b, 0) / Math.max(1, sorted.length),
    throughput: (sorted.length / wallMs) * 1000,
  };
}

/** A keep-alive JSON POST client for one origin. @param {string} baseUrl @param {number} maxSockets */
export function client(baseUrl, maxSockets) {
  const url = new URL(baseUrl);
  const agent = new http.Agent({ keepAlive: true, maxSockets });
  return {
    /** @returns {Promise<{ status: number; text: string }>} */
    post(path, body, headers = {}) {
      const payload = JSON.stringify(body);
      return new Promise((resolve, reject) => {
        const req = http.request(
          {
            agent,
            host: url.hostname,
            port: url.port,
            method: "POST",
            path,
            headers: { "content-type": "application/json", "content-length": Buffer.byteLength(payload), ...headers },
          },
          (res) => {
            let text = "";
            res.setEncoding("utf8");
            res.on("data", (c) => (text += c));
            res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
          },
        );
        req.on("error", reject);
        req.end(payload);
      });
    },
    close: () => agent.destroy(),
  };
}

/** Runs `op` from `concurrency` closed-loop clients for `durationMs` after a warm-up. */
export async function load(op, { concurrency, durationMs, warmupMs = 500 }) {
  const until = (deadline, samples) =>
    (async () => {
      while (performance.now() < deadline) {
        const t0 = performance.now();
        await op();
        samples?.push(performance.now() - t0);
      }
    })();
  const warm = performance.now() + warmupMs;
  await Promise.all(Array.from({ length: concurrency }, () => until(warm)));
  const samples = [];
  const start = performance.now();
  await Promise.all(Array.from({ length: concurrency }, () => until(start + durationMs, samples)));
  return { ...stats(samples, performance.now() - start), samples };
}
