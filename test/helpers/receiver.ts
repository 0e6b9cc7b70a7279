import http from "node:http";
import type { AddressInfo } from "node:net";

/**
 * What a test's worker reports to, on 127.0.0.1: each request's body, parsed by `parse`, in the
 * order received. `answer` picks the status of each (200 by default): a receiver not ready yet.
 */
export async function startReceiver<T>(parse: (text: string) => T, answer: (what: T) => number = () => 200) {
  const received: T[] = [];
  const server = http.createServer((request, response) => {
    let text = "";
    request.on("data", (chunk: Buffer) => (text += chunk.toString("utf8")));
    request.on("end", () => {
      const what = parse(text);
      received.push(what);
      response.writeHead(answer(what)).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    received,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
