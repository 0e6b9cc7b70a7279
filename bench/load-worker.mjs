// A load generator off the bench's event loop: in a worker thread (its own event loop, so the
// client's work does not queue behind the server's), or as a process of its own (an external
// client: `node bench/load-worker.mjs '<json options>'` prints its figures as JSON). Every answer
// is checked: a status other than `expectStatus` (200 unless given), or a body without `expect`, counts as bad.
import { isMainThread, parentPort, workerData } from "node:worker_threads";
import { client, load } from "./load.mjs";

const options = isMainThread ? JSON.parse(process.argv[2]) : workerData;
const { url, path, body, headers = {}, concurrency, durationMs, expect, expectStatus = 200 } = options;
const http = client(url, concurrency);
let bad = 0;
let firstBad;
const result = await load(
  async () => {
    const answer = await http.post(path, body, headers);
    if (answer.status !== expectStatus || (expect !== undefined && !answer.text.includes(expect))) {
      bad += 1;
      firstBad ??= `${answer.status} ${answer.text.slice(0, 200)}`;
    }
  },
  { concurrency, durationMs },
);
http.close();
const figures = { ...result, bad, firstBad };
if (isMainThread) {
  delete figures.samples;
  process.stdout.write(JSON.stringify(figures));
} else {
  parentPort.postMessage(figures);
}
