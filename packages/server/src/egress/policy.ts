import ipaddr from "ipaddr.js";
import { BlockList, isIP } from "node:net";
import { networkInterfaces } from "node:os";
import { promises as dns, type LookupAddress } from "node:dns";
import { ConfigError } from "../config.js";

/**
 * Where workers (and the server's own OAuth calls) may connect. Decisions are made on the
 * resolved address, never on the name alone, so a public name that resolves to 10.0.0.5 is
 * treated as 10.0.0.5. Precedence: an --egress-deny rule wins over everything; then an
 * --egress-allow rule; then the default-deny categories below; everything else is allowed.
 */

export type EgressFlag = "--egress-allow" | "--egress-deny";

/** A rule given to --egress-allow or --egress-deny that cannot be read. */
export class EgressRuleError extends ConfigError {
  constructor(
    readonly flag: EgressFlag,
    readonly rule: string,
    reason: string,
  ) {
    super(
      `${flag} ${JSON.stringify(rule)}: ${reason}. Expected HOST, HOST:PORT, *.DOMAIN[:PORT], an IP address with an optional port (10.0.0.5:5432, [fd00::1]:4000) or a CIDR (10.0.0.0/8, fd00::/8).`,
    );
    this.name = "EgressRuleError";
  }
}

export type DenialCategory =
  | "loopback"
  | "private"
  | "cgnat"
  | "link-local"
  | "multicast"
  | "unspecified"
  | "server"
  | "deny-rule";

export interface EgressTarget {
  /** The name or IP literal the request asked for (brackets around IPv6 are accepted). */
  host: string;
  port: number;
  /** The address the connection will go to: the resolved one, or the literal itself. */
  address: string;
}

export type EgressDecision = { allowed: true } | { allowed: false; category: DenialCategory; message: string };
export type EgressDenial = Extract<EgressDecision, { allowed: false }>;

export interface DecideOptions {
  /**
   * The server named this target itself (the npm registry for builds): it is reached by name,
   * whatever it resolves to, and only --egress-deny rules apply.
   */
  byName?: boolean;
}

export interface EgressPolicy {
  decide(target: EgressTarget, options?: DecideOptions): EgressDecision;
  /**
   * For a target the server names itself and reaches through the operator's proxy without
   * resolving it here: only --egress-deny rules by name (or by literal address) apply.
   */
  decideByName(host: string, port: number): EgressDecision;
  /** A few lines for the start banner. */
  describe(): string[];
}

/** A denied connection, raised where the decision is made (the server's own outbound calls). */
export class EgressDeniedError extends Error {
  readonly code = "EGRESS_DENIED";
  constructor(readonly denial: EgressDenial) {
    super(denial.message);
    this.name = "EgressDeniedError";
  }
}

interface Category {
  category: Exclude<DenialCategory, "server" | "deny-rule">;
  phrase: string;
  summary: string;
  v4: string[];
  v6: string[];
}

/** Exactly the ranges the issue lists; documentation and other special-purpose ranges stay reachable. */
const CATEGORIES: Category[] = [
  { category: "unspecified", phrase: "an unspecified address", summary: "unspecified", v4: ["0.0.0.0/8"], v6: ["::/128"] },
  { category: "loopback", phrase: "a loopback address", summary: "loopback", v4: ["127.0.0.0/8"], v6: ["::1/128"] },
  {
    category: "private",
    phrase: "a private address",
    summary: "private (RFC 1918, fc00::/7)",
    v4: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
    v6: ["fc00::/7"],
  },
  { category: "cgnat", phrase: "a shared (CGNAT) address", summary: "shared (CGNAT 100.64.0.0/10)", v4: ["100.64.0.0/10"], v6: [] },
  {
    category: "link-local",
    phrase: "a link-local address (cloud metadata lives here)",
    summary: "link-local and cloud metadata (169.254.0.0/16, fe80::/10)",
    v4: ["169.254.0.0/16"],
    v6: ["fe80::/10"],
  },
  { category: "multicast", phrase: "a multicast address", summary: "multicast", v4: ["224.0.0.0/4"], v6: ["ff00::/8"] },
];

const SERVER_PHRASE = "one of this server's own addresses";

function addSubnet(list: BlockList, address: string, prefix: number): void {
  list.addSubnet(address, prefix, isIP(address) === 4 ? "ipv4" : "ipv6");
}

/**
 * The IPv4 addresses an IPv6 address carries, which a route (a tunnel, a translator, a relay) may
 * deliver to: IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96
 * and the local-use 64:ff9b:1::/48, in the /96 form), 6to4 (2002:AABB:CCDD::/48) and Teredo
 * (2001:0:SERVER::~CLIENT, the client's bits flipped). A v4 range is checked against each, so no
 * spelling slips an internal IPv4 address past it.
 */
export function embeddedIPv4(address: string): string[] {
  if (isIP(address) !== 6) return [];
  const parsed = ipaddr.IPv6.parse(address);
  const bytes = parsed.toByteArray();
  const words = parsed.parts;
  const v4 = (at: number, flip = 0) => bytes.slice(at, at + 4).map((b) => b ^ flip).join(".");
  const zeros = (from: number, to: number) => words.slice(from, to).every((w) => w === 0);
  if (zeros(0, 5) && words[5] === 0xffff) return [v4(12)];
  // ::a.b.c.d, but not :: and ::1 (nor anything else in 0.0.0.0/16, which no one routes).
  if (zeros(0, 6) && words[6] !== 0) return [v4(12)];
  if (words[0] === 0x64 && words[1] === 0xff9b && (zeros(2, 6) || (words[2] === 1 && zeros(3, 6)))) return [v4(12)];
  if (words[0] === 0x2002) return [v4(2)];
  if (words[0] === 0x2001 && words[1] === 0) return [v4(4), v4(12, 0xff)];
  return [];
}

/** Whether the list holds the address or an IPv4 address inside it; which one. */
function containing(list: BlockList, address: string): string | undefined {
  if (list.check(address, isIP(address) === 4 ? "ipv4" : "ipv6")) return address;
  return embeddedIPv4(address).find((inner) => list.check(inner, "ipv4"));
}

function contains(list: BlockList, address: string): boolean {
  return containing(list, address) !== undefined;
}

function categoryList(category: Category): BlockList {
  const list = new BlockList();
  for (const cidr of [...category.v4, ...category.v6]) {
    const [address, prefix] = cidr.split("/") as [string, string];
    addSubnet(list, address, Number(prefix));
  }
  return list;
}

/** A host name as compared: lower case, no trailing dot, no IPv6 brackets. */
function normaliseHost(host: string): string {
  let h = host.trim().toLowerCase();
  if (h.startsWith("[") && h.endsWith("]")) h = h.slice(1, -1);
  if (h.endsWith(".")) h = h.slice(0, -1);
  return h;
}

type Rule =
  | { text: string; kind: "name"; name: string; port?: number }
  | { text: string; kind: "wildcard"; suffix: string; port?: number }
  | { text: string; kind: "address"; list: BlockList; port?: number };

const LABEL = /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/;

function parsePort(flag: EgressFlag, rule: string, text: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) < 1 || Number(text) > 65535) {
    throw new EgressRuleError(flag, rule, `the port must be a number from 1 to 65535, got ${JSON.stringify(text)}`);
  }
  return Number(text);
}

function parseName(flag: EgressFlag, rule: string, name: string): string {
  const labels = name.split(".");
  if (name.length > 253 || !labels.every((label) => LABEL.test(label))) {
    throw new EgressRuleError(flag, rule, `${JSON.stringify(name)} is not a host name`);
  }
  return name;
}

/** One --egress-allow or --egress-deny value. */
export function parseEgressRule(flag: EgressFlag, rule: string): Rule {
  const text = rule.trim();
  const lower = text.toLowerCase();
  if (text === "") throw new EgressRuleError(flag, rule, "the rule is empty");
  if (text.includes("://")) throw new EgressRuleError(flag, rule, "a rule names a host or an address, not a URL");

  if (lower.includes("/")) {
    const [address = "", prefixText = "", ...rest] = lower.split("/");
    const family = isIP(address);
    const max = family === 4 ? 32 : 128;
    if (family === 0 || rest.length > 0) throw new EgressRuleError(flag, rule, `a CIDR needs an IP address before the "/"`);
    if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > max) {
      throw new EgressRuleError(flag, rule, `the prefix length must be a number from 0 to ${max}`);
    }
    const list = new BlockList();
    addSubnet(list, address, Number(prefixText));
    return { text, kind: "address", list };
  }

  let host = lower;
  let port: number | undefined;
  if (lower.startsWith("[")) {
    const close = lower.indexOf("]");
    const after = lower.slice(close + 1);
    host = lower.slice(1, close);
    if (close < 0 || isIP(host) !== 6) throw new EgressRuleError(flag, rule, "brackets must hold an IPv6 address");
    if (after !== "") {
      if (!after.startsWith(":")) throw new EgressRuleError(flag, rule, `unexpected ${JSON.stringify(after)} after "]"`);
      port = parsePort(flag, rule, after.slice(1));
    }
  } else if (isIP(lower) === 0) {
    const parts = lower.split(":");
    if (parts.length > 2) throw new EgressRuleError(flag, rule, "write an IPv6 address with a port in brackets, like [fd00::1]:4000");
    host = parts[0] ?? "";
    if (parts.length === 2) port = parsePort(flag, rule, parts[1] ?? "");
  }
  if (host.endsWith(".")) host = host.slice(0, -1);

  if (isIP(host) !== 0) {
    const list = new BlockList();
    addSubnet(list, host, isIP(host) === 4 ? 32 : 128);
    return { text, kind: "address", list, ...(port === undefined ? {} : { port }) };
  }
  if (host.startsWith("*.")) {
    return { text, kind: "wildcard", suffix: `.${parseName(flag, rule, host.slice(2))}`, ...(port === undefined ? {} : { port }) };
  }
  return { text, kind: "name", name: parseName(flag, rule, host), ...(port === undefined ? {} : { port }) };
}

/**
 * Whether a rule names the target. A deny rule also names an IPv6 address that carries one of its
 * IPv4 addresses (any form, embeddedIPv4); an allow rule only the address itself and its
 * IPv4-mapped spelling: `--egress-allow 10.0.0.5` must not open the 6to4 network 2002:a00:5::/48,
 * nor a Teredo address whose other IPv4 is a denied one.
 */
function ruleMatches(rule: Rule, host: string, port: number, address: string, kind: "allow" | "deny"): boolean {
  if (rule.port !== undefined && rule.port !== port) return false;
  switch (rule.kind) {
    case "name":
      return host === rule.name;
    case "wildcard":
      return host.endsWith(rule.suffix);
    case "address": {
      const holds = (candidate: string) => (kind === "deny" ? contains(rule.list, candidate) : containsAsAllowed(rule.list, candidate));
      return holds(address) || (isIP(host) !== 0 && holds(host));
    }
  }
}

/** The address, or the IPv4 address an IPv4-mapped one spells (::ffff:a.b.c.d is a.b.c.d). */
function containsAsAllowed(list: BlockList, address: string): boolean {
  if (list.check(address, isIP(address) === 4 ? "ipv4" : "ipv6")) return true;
  if (isIP(address) !== 6) return false;
  const parsed = ipaddr.IPv6.parse(address);
  return parsed.isIPv4MappedAddress() && list.check(parsed.toIPv4Address().toString(), "ipv4");
}

function formatTarget(host: string, port: number, address: string): string {
  const shown = isIP(host) !== 0 ? host : `${host} (${address})`;
  return isIP(host) === 6 ? `[${shown}]:${port}` : `${shown}:${port}`;
}

export interface EgressPolicyOptions {
  allow: string[];
  deny: string[];
  /** This server's own addresses (see localInterfaceAddresses), denied like loopback. */
  serverAddresses?: string[];
}

export function createEgressPolicy(options: EgressPolicyOptions): EgressPolicy {
  const allow = options.allow.map((rule) => parseEgressRule("--egress-allow", rule));
  const deny = options.deny.map((rule) => parseEgressRule("--egress-deny", rule));
  const categories = CATEGORIES.map((category) => ({ ...category, list: categoryList(category) }));
  const server = new BlockList();
  for (const address of options.serverAddresses ?? []) {
    const plain = normaliseHost(address);
    if (isIP(plain) === 0) throw new TypeError(`serverAddresses: ${JSON.stringify(address)} is not an IP address`);
    addSubnet(server, plain, isIP(plain) === 4 ? 32 : 128);
  }

  function decide(target: EgressTarget, decideOptions: DecideOptions = {}): EgressDecision {
    const host = normaliseHost(target.host);
    const address = normaliseHost(target.address);
    if (isIP(address) === 0) throw new TypeError(`egress decision needs a resolved IP address, got ${JSON.stringify(target.address)}`);
    const where = formatTarget(host, target.port, address);

    const denyRule = deny.find((rule) => ruleMatches(rule, host, target.port, address, "deny"));
    if (denyRule) {
      return { allowed: false, category: "deny-rule", message: `egress denied: ${where} is denied by --egress-deny ${denyRule.text}` };
    }
    if (decideOptions.byName) return { allowed: true };
    if (allow.some((rule) => ruleMatches(rule, host, target.port, address, "allow"))) return { allowed: true };

    const hint = "; allow it with --egress-allow";
    // An IPv4 address found inside an IPv6 one is named, so the denial makes sense to the reader.
    const inside = (found: string) => (found === address ? "" : ` (${found} inside)`);
    const found = categories.map((category) => ({ category, found: containing(category.list, address) })).filter((hit) => hit.found !== undefined);
    // The address's own category first (::1 is loopback), then what an IPv4 address inside it is.
    const hit = found.find((h) => h.found === address) ?? found[0];
    if (hit) return { allowed: false, category: hit.category.category, message: `egress denied: ${where} is ${hit.category.phrase}${inside(hit.found!)}${hint}` };
    const own = containing(server, address);
    if (own) return { allowed: false, category: "server", message: `egress denied: ${where} is ${SERVER_PHRASE}${inside(own)}${hint}` };
    return { allowed: true };
  }

  function decideByName(rawHost: string, port: number): EgressDecision {
    const host = normaliseHost(rawHost);
    const literal = isIP(host) !== 0;
    const denyRule = deny.find((rule) => (rule.kind === "address" ? literal && ruleMatches(rule, host, port, host, "deny") : ruleMatches(rule, host, port, host, "deny")));
    if (denyRule) {
      const where = isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
      return { allowed: false, category: "deny-rule", message: `egress denied: ${where} is denied by --egress-deny ${denyRule.text}` };
    }
    return { allowed: true };
  }

  function describe(): string[] {
    const lines = [
      `Egress: workers may reach public addresses; denied: ${CATEGORIES.map((c) => c.summary).join(", ")}, this server's own addresses`,
    ];
    if (allow.length > 0) lines.push(`Egress allowed (--egress-allow): ${allow.map((rule) => rule.text).join(", ")}`);
    if (deny.length > 0) lines.push(`Egress denied (--egress-deny): ${deny.map((rule) => rule.text).join(", ")}`);
    return lines;
  }

  return { decide, decideByName, describe };
}

/** Every address on this machine's interfaces: what "this server's own addresses" means by default. */
export function localInterfaceAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flatMap((entries) => entries ?? [])
    .map((entry) => entry.address.replace(/%.*$/, ""));
}

/** Name -> addresses; injectable so tests never ask a real resolver. */
export type EgressLookup = (hostname: string) => Promise<LookupAddress[]>;

export const systemLookup: EgressLookup = (hostname) => dns.lookup(hostname, { all: true, verbatim: true });

/**
 * The addresses of `host` this policy lets us connect to, in resolver order. An IP literal is
 * its own address. Throws EgressDeniedError (the first denial) when none is allowed; resolver
 * failures (ENOTFOUND, ...) are thrown as they come.
 */
export async function resolveAllowed(
  policy: EgressPolicy,
  lookup: EgressLookup,
  target: { host: string; port: number },
  options: DecideOptions = {},
): Promise<LookupAddress[]> {
  const host = normaliseHost(target.host);
  const family = isIP(host);
  const addresses = family !== 0 ? [{ address: host, family }] : await lookup(host);
  let firstDenial: EgressDenial | undefined;
  const allowed = addresses.filter((entry) => {
    const decision = policy.decide({ host, port: target.port, address: entry.address }, options);
    if (!decision.allowed) firstDenial ??= decision;
    return decision.allowed;
  });
  if (allowed.length === 0) {
    if (firstDenial) throw new EgressDeniedError(firstDenial);
    throw Object.assign(new Error(`${host} has no address`), { code: "ENOTFOUND" });
  }
  return allowed;
}
