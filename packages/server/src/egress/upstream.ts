import net from "node:net";
import { ConfigError } from "../config.js";

/**
 * The operator's own way out, when the machine has one: an HTTP proxy that connections to the
 * outside go through (a corporate proxy), taken by name from the server's environment or given
 * with --egress-proxy. The gateway and the server's own calls open a CONNECT tunnel through it
 * to the checked destination; the policy has decided before, on the name's local resolution.
 */
export interface UpstreamProxy {
  url: URL;
  /** Hosts reached directly (NO_PROXY): exact names, `.suffix` or `suffix` domains, `*`. */
  direct: string[];
}

/** The proxy of config.egressProxy (which config.ts takes from the flag or the environment), checked. */
export function parseUpstreamProxy(value: string | undefined, noProxy: string | undefined): UpstreamProxy | undefined {
  if (!value) return undefined;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(`--egress-proxy must be an http:// URL such as http://proxy.example.com:3128; got ${JSON.stringify(value)}.`);
  }
  if (url.protocol !== "http:") throw new ConfigError(`--egress-proxy must be an http:// proxy (CONNECT); got ${url.protocol} in ${JSON.stringify(url.origin)}.`);
  const direct = (noProxy ?? "")
    .split(",")
    .map((entry) => entry.trim().toLowerCase().replace(/:\d+$/, ""))
    .filter(Boolean);
  return { url, direct };
}

/** Whether `host` goes through the proxy (not named in NO_PROXY). */
export function viaProxy(proxy: UpstreamProxy | undefined, host: string): proxy is UpstreamProxy {
  if (!proxy) return false;
  const name = host.toLowerCase();
  return !proxy.direct.some((entry) => entry === "*" || entry === name || name.endsWith(entry.startsWith(".") ? entry : `.${entry}`));
}

/** `host:port` as CONNECT names it (IPv6 in brackets). */
function authority(host: string, port: number): string {
  return `${net.isIP(host) === 6 ? `[${host}]` : host}:${port}`;
}

/**
 * A TCP connection to host:port through the proxy (RFC 9110 §9.3.6 CONNECT), ready for the bytes
 * of the destination (plain HTTP, or TLS the caller starts on it).
 */
export function connectThroughProxy(proxy: UpstreamProxy, host: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: proxy.url.hostname.replace(/^\[(.*)\]$/, "$1"), port: Number(proxy.url.port) || 80 });
    const timer = setTimeout(() => socket.destroy(Object.assign(new Error(`the proxy did not open a tunnel within ${Math.round(timeoutMs / 1000)}s`), { code: "EGRESS_CONNECT_TIMEOUT" })), timeoutMs);
    let head = Buffer.alloc(0);
    const fail = (error: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(error);
    };
    socket.once("error", fail);
    socket.once("connect", () => {
      const auth = proxy.url.username
        ? `Proxy-Authorization: Basic ${Buffer.from(`${decodeURIComponent(proxy.url.username)}:${decodeURIComponent(proxy.url.password)}`).toString("base64")}\r\n`
        : "";
      socket.write(`CONNECT ${authority(host, port)} HTTP/1.1\r\nHost: ${authority(host, port)}\r\n${auth}\r\n`);
    });
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) {
        if (head.length > 16 * 1024) fail(new Error("the proxy's answer to CONNECT is too long"));
        return;
      }
      socket.off("data", onData);
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head.subarray(0, end).toString("latin1"))?.[1]);
      if (status !== 200) {
        fail(Object.assign(new Error(`the proxy refused the tunnel to ${authority(host, port)} (HTTP ${Number.isNaN(status) ? "?" : status})`), { code: "EGRESS_PROXY_REFUSED" }));
        return;
      }
      clearTimeout(timer);
      socket.off("error", fail);
      const rest = head.subarray(end + 4);
      if (rest.length > 0) socket.unshift(rest);
      resolve(socket);
    };
    socket.on("data", onData);
  });
}
