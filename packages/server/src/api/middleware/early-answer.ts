import type { FastifyInstance } from "fastify";

/** How long, and how much more of a body, is read and dropped after an early answer. */
const LINGER_MS = 2000;
const LINGER_BYTES = 1024 * 1024;

/**
 * An answer sent before its request's body has all arrived (an upload refused as it arrives, a
 * webhook body over the limit) reaches the client, which is still sending. Closing the connection
 * at once would close a socket with unread input, which sends a reset, and a client that gets the
 * reset drops the answer it has not read yet: it reports EPIPE or ECONNRESET instead of 413. So
 * after such an answer the rest of the body is read and dropped, bounded in time and bytes (what
 * nginx's lingering close does), and the connection is closed only past the bound; a body that
 * ends within it leaves the connection usable. While the server stops, answers close at once.
 */
export function lingerAfterEarlyAnswers(scope: FastifyInstance): void {
  let closing = false;
  scope.addHook("preClose", async () => {
    closing = true;
  });
  scope.addHook("onSend", async (request, reply, payload) => {
    if (closing) {
      reply.header("connection", "close");
      return payload;
    }
    const incoming = request.raw;
    if (incoming.complete) return payload;
    reply.raw.once("finish", () => {
      if (incoming.complete) return;
      const socket = incoming.socket;
      const cut = () => socket.destroy();
      const timer = setTimeout(cut, LINGER_MS);
      timer.unref();
      let dropped = 0;
      // Whatever parsed the body so far (multipart) lets go of it; the rest is counted and dropped.
      incoming.unpipe();
      incoming.removeAllListeners("data");
      incoming.on("data", (chunk: Buffer) => {
        dropped += chunk.length;
        if (dropped > LINGER_BYTES) cut();
      });
      incoming.once("end", () => clearTimeout(timer));
      incoming.once("close", () => clearTimeout(timer));
      incoming.resume();
    });
    return payload;
  });
}
