// A load generator in a worker thread: its own event loop, so the client's work does not queue
// behind the server's (or the baseline's) in the bench process.
import { parentPort, workerData } from "node:worker_threads";
import { client, load } from "./load.mjs";

const { url, path, body, headers, concurrency, durationMs } = workerData;
const http = client(url, concurrency);
const result = await load(() => http.post(path, body, headers), { concurrency, durationMs });
http.close();
parentPort.postMessage(result);
