import { describe, expect, it } from "vitest";
import { ConfigError } from "../config.js";
import { createEgressPolicy, EgressDeniedError, EgressRuleError, parseEgressRule, resolveAllowed, type EgressLookup } from "./policy.js";

// Pure functions of resolved addresses: nothing here opens a socket or asks a resolver.

const open = createEgressPolicy({ allow: [], deny: [] });

function denial(address: string, port = 443, host = address) {
  const decision = open.decide({ host, port, address });
  return decision.allowed ? undefined : decision;
}

describe("default-deny categories", () => {
  it.each([
    ["127.0.0.1", "loopback", "a loopback address"],
    ["127.255.0.9", "loopback", "a loopback address"],
    ["::1", "loopback", "a loopback address"],
    ["10.0.0.5", "private", "a private address"],
    ["172.16.0.1", "private", "a private address"],
    ["172.31.255.255", "private", "a private address"],
    ["192.168.1.1", "private", "a private address"],
    ["fd00::5", "private", "a private address"],
    ["fc00::1", "private", "a private address"],
    ["100.64.0.1", "cgnat", "a shared (CGNAT) address"],
    ["100.127.255.254", "cgnat", "a shared (CGNAT) address"],
    ["169.254.169.254", "link-local", "a link-local address (cloud metadata lives here)"],
    ["fe80::1", "link-local", "a link-local address (cloud metadata lives here)"],
    ["224.0.0.1", "multicast", "a multicast address"],
    ["239.255.255.250", "multicast", "a multicast address"],
    ["ff02::1", "multicast", "a multicast address"],
    ["0.0.0.0", "unspecified", "an unspecified address"],
    ["0.1.2.3", "unspecified", "an unspecified address"],
    ["::", "unspecified", "an unspecified address"],
  ])("%s is %s", (address, category, phrase) => {
    const d = denial(address, 5432);
    expect(d?.category).toBe(category);
    const where = address.includes(":") ? `[${address}]:5432` : `${address}:5432`;
    expect(d?.message).toBe(`egress denied: ${where} is ${phrase}; allow it with --egress-allow`);
  });

  it.each([
    "8.8.8.8",
    "203.0.113.80", // documentation range: not on the list, and the npm registry resolves here on these machines
    "198.51.100.7",
    "172.32.0.1",
    "100.128.0.1",
    "172.15.255.255",
    "2606:4700::1111",
    "2001:db8::1",
    "fec0::1",
  ])("%s is allowed", (address) => {
    expect(open.decide({ host: address, port: 443, address })).toEqual({ allowed: true });
  });

  it("the message exactly as the issue spells it", () => {
    expect(denial("127.0.0.1", 5432)?.message).toBe("egress denied: 127.0.0.1:5432 is a loopback address; allow it with --egress-allow");
  });

  it("names the host when a name resolved to the address", () => {
    expect(denial("10.0.0.5", 5432, "db.internal")?.message).toBe(
      "egress denied: db.internal (10.0.0.5):5432 is a private address; allow it with --egress-allow",
    );
    expect(denial("fd00::5", 5432, "db.internal")?.message).toBe(
      "egress denied: db.internal (fd00::5):5432 is a private address; allow it with --egress-allow",
    );
  });

  it("sees IPv4 inside IPv4-mapped IPv6 and NAT64 addresses", () => {
    expect(denial("::ffff:127.0.0.1")?.category).toBe("loopback");
    expect(denial("::ffff:7f00:1")?.category).toBe("loopback");
    expect(denial("::ffff:10.1.2.3")?.category).toBe("private");
    expect(denial("::ffff:169.254.169.254")?.category).toBe("link-local");
    expect(denial("64:ff9b::127.0.0.1")?.category).toBe("loopback");
    expect(denial("64:ff9b::a9fe:a9fe")?.category).toBe("link-local");
    expect(denial("64:ff9b::100.64.0.1")?.category).toBe("cgnat");
    expect(denial("::ffff:8.8.8.8")).toBeUndefined();
    expect(denial("64:ff9b::8.8.8.8")).toBeUndefined();
  });

  it("sees IPv4 inside IPv4-compatible, 6to4, Teredo and local-use NAT64 addresses (a route may reach the IPv4 inside)", () => {
    // IPv4-compatible (deprecated): ::a.b.c.d
    expect(denial("::127.0.0.1")?.category).toBe("loopback");
    expect(denial("::10.1.2.3")?.category).toBe("private");
    expect(denial("::a9fe:a9fe")?.category).toBe("link-local");
    // 6to4: 2002:AABB:CCDD::/48 carries a.b.c.d
    expect(denial("2002:7f00:1::1")?.category).toBe("loopback");
    expect(denial("2002:a9fe:a9fe::")?.category).toBe("link-local");
    expect(denial("2002:c0a8:101:5::1")?.category).toBe("private");
    expect(denial("2002:808:808::1")).toBeUndefined();
    // Teredo: 2001:0:SERVER:flags:port:~CLIENT (the client's IPv4 with every bit flipped)
    expect(denial("2001:0:4136:e378:8000:63bf:f5ff:fffe")?.category).toBe("private");
    expect(denial("2001:0:a00:1::")?.category).toBe("private");
    expect(denial("2001:0:4136:e378:8000:63bf:f7f7:f7f7")).toBeUndefined();
    // Local-use NAT64 (RFC 8215), as the well-known prefix's /96 form
    expect(denial("64:ff9b:1::a9fe:a9fe")?.category).toBe("link-local");
    // Messages name the IPv4 inside.
    expect(denial("2002:a00:1::1")?.message).toBe("egress denied: [2002:a00:1::1]:443 is a private address (10.0.0.1 inside); allow it with --egress-allow");
  });

  it("applies deny rules and the server's own addresses to the IPv4 inside an IPv6 address", () => {
    const policy = createEgressPolicy({ allow: [], deny: ["203.0.113.0/24"], serverAddresses: ["198.51.100.10"] });
    expect(policy.decide({ host: "2002:cb00:7101::1", port: 443, address: "2002:cb00:7101::1" })).toMatchObject({ allowed: false, category: "deny-rule" });
    expect(policy.decide({ host: "::203.0.113.9", port: 443, address: "::203.0.113.9" })).toMatchObject({ allowed: false, category: "deny-rule" });
    expect(policy.decide({ host: "2002:c633:640a::1", port: 80, address: "2002:c633:640a::1" })).toMatchObject({ allowed: false, category: "server" });
  });

  it("an allow rule opens its address and the IPv4-mapped spelling of it, not IPv6 networks that carry it", () => {
    const policy = createEgressPolicy({ allow: ["10.0.0.5"], deny: [] });
    expect(policy.decide({ host: "10.0.0.5", port: 80, address: "10.0.0.5" })).toEqual({ allowed: true });
    expect(policy.decide({ host: "::ffff:10.0.0.5", port: 80, address: "::ffff:10.0.0.5" })).toEqual({ allowed: true });
    // 6to4 network of 10.0.0.5, and a Teredo address whose server is 10.0.0.5 and client 127.0.0.1.
    expect(policy.decide({ host: "2002:a00:5::1", port: 80, address: "2002:a00:5::1" })).toMatchObject({ allowed: false, category: "private" });
    expect(policy.decide({ host: "2001:0:a00:5::80ff:fffe", port: 80, address: "2001:0:a00:5::80ff:fffe" })).toMatchObject({ allowed: false });
  });

  it("accepts a bracketed IPv6 host", () => {
    expect(open.decide({ host: "[::1]", port: 80, address: "::1" })).toMatchObject({ allowed: false, category: "loopback" });
  });

  it("denies the server's own addresses, on any port", () => {
    const policy = createEgressPolicy({ allow: [], deny: [], serverAddresses: ["198.51.100.10", "2001:db8::10"] });
    expect(policy.decide({ host: "me.example", port: 22, address: "198.51.100.10" })).toEqual({
      allowed: false,
      category: "server",
      message: "egress denied: me.example (198.51.100.10):22 is one of this server's own addresses; allow it with --egress-allow",
    });
    expect(policy.decide({ host: "::ffff:198.51.100.10", port: 80, address: "::ffff:198.51.100.10" })).toMatchObject({ category: "server" });
    expect(policy.decide({ host: "2001:db8::10", port: 80, address: "2001:db8::10" })).toMatchObject({ category: "server" });
    expect(policy.decide({ host: "198.51.100.11", port: 80, address: "198.51.100.11" })).toEqual({ allowed: true });
  });

  it("rejects a decision without a resolved address", () => {
    expect(() => open.decide({ host: "example.com", port: 443, address: "example.com" })).toThrow(TypeError);
  });
});

describe("allow and deny rules", () => {
  it("allows a loopback address and port, and no other port", () => {
    const policy = createEgressPolicy({ allow: ["127.0.0.1:4000"], deny: [] });
    expect(policy.decide({ host: "127.0.0.1", port: 4000, address: "127.0.0.1" })).toEqual({ allowed: true });
    expect(policy.decide({ host: "localhost", port: 4000, address: "127.0.0.1" })).toEqual({ allowed: true });
    expect(policy.decide({ host: "::ffff:127.0.0.1", port: 4000, address: "::ffff:127.0.0.1" })).toEqual({ allowed: true });
    expect(policy.decide({ host: "127.0.0.1", port: 4001, address: "127.0.0.1" })).toMatchObject({ allowed: false, category: "loopback" });
  });

  it("allows a host name whatever it resolves to, and only that name", () => {
    const policy = createEgressPolicy({ allow: ["db.internal:5432", "Search.Internal."], deny: [] });
    expect(policy.decide({ host: "db.internal", port: 5432, address: "10.0.0.5" })).toEqual({ allowed: true });
    expect(policy.decide({ host: "DB.internal.", port: 5432, address: "10.0.0.5" })).toEqual({ allowed: true });
    expect(policy.decide({ host: "db.internal", port: 5433, address: "10.0.0.5" })).toMatchObject({ allowed: false });
    expect(policy.decide({ host: "other.internal", port: 5432, address: "10.0.0.5" })).toMatchObject({ allowed: false });
    expect(policy.decide({ host: "search.internal", port: 9200, address: "10.0.0.6" })).toEqual({ allowed: true });
  });

  it("allows subdomains with a wildcard, not the bare domain", () => {
    const policy = createEgressPolicy({ allow: ["*.corp.example:443"], deny: [] });
    expect(policy.decide({ host: "a.corp.example", port: 443, address: "10.0.0.1" })).toEqual({ allowed: true });
    expect(policy.decide({ host: "a.b.corp.example", port: 443, address: "10.0.0.1" })).toEqual({ allowed: true });
    expect(policy.decide({ host: "corp.example", port: 443, address: "10.0.0.1" })).toMatchObject({ allowed: false });
    expect(policy.decide({ host: "evilcorp.example", port: 443, address: "10.0.0.1" })).toMatchObject({ allowed: false });
  });

  it("allows CIDRs, IPv4 and IPv6", () => {
    const policy = createEgressPolicy({ allow: ["10.0.0.0/8", "fd00::/8", "[::1]:4000"], deny: [] });
    expect(policy.decide({ host: "x.internal", port: 1, address: "10.200.0.1" })).toEqual({ allowed: true });
    expect(policy.decide({ host: "x.internal", port: 1, address: "::ffff:10.200.0.1" })).toEqual({ allowed: true });
    expect(policy.decide({ host: "x.internal", port: 1, address: "fd12::1" })).toEqual({ allowed: true });
    expect(policy.decide({ host: "x.internal", port: 1, address: "fc00::1" })).toMatchObject({ allowed: false, category: "private" });
    expect(policy.decide({ host: "::1", port: 4000, address: "::1" })).toEqual({ allowed: true });
    expect(policy.decide({ host: "::1", port: 4001, address: "::1" })).toMatchObject({ allowed: false, category: "loopback" });
  });

  it("lets an explicit deny win over an allow and over public addresses", () => {
    const policy = createEgressPolicy({ allow: ["10.0.0.0/8", "api.example.com"], deny: ["10.0.0.5", "api.example.com:8443", "203.0.113.0/24"] });
    expect(policy.decide({ host: "db.internal", port: 5432, address: "10.0.0.5" })).toEqual({
      allowed: false,
      category: "deny-rule",
      message: "egress denied: db.internal (10.0.0.5):5432 is denied by --egress-deny 10.0.0.5",
    });
    expect(policy.decide({ host: "db.internal", port: 5432, address: "10.0.0.6" })).toEqual({ allowed: true });
    expect(policy.decide({ host: "api.example.com", port: 443, address: "198.51.100.1" })).toEqual({ allowed: true });
    expect(policy.decide({ host: "api.example.com", port: 8443, address: "198.51.100.1" })).toMatchObject({ category: "deny-rule" });
    expect(policy.decide({ host: "203.0.113.9", port: 80, address: "203.0.113.9" })).toMatchObject({
      message: "egress denied: 203.0.113.9:80 is denied by --egress-deny 203.0.113.0/24",
    });
  });

  it("by name, only deny rules apply", () => {
    const policy = createEgressPolicy({ allow: [], deny: ["10.9.9.9"] });
    expect(policy.decide({ host: "registry.npmjs.org", port: 443, address: "127.0.0.1" }, { byName: true })).toEqual({ allowed: true });
    expect(policy.decide({ host: "registry.npmjs.org", port: 443, address: "10.9.9.9" }, { byName: true })).toMatchObject({
      category: "deny-rule",
    });
  });
});

describe("rule syntax", () => {
  it.each([
    "example.com",
    "example.com:443",
    "*.example.com",
    "*.example.com:8443",
    "localhost",
    "127.0.0.1",
    "127.0.0.1:5432",
    "::1",
    "[::1]",
    "[::1]:4000",
    "10.0.0.0/8",
    "fd00::/8",
    "0.0.0.0/0",
  ])("reads %s", (rule) => {
    expect(() => parseEgressRule("--egress-allow", rule)).not.toThrow();
  });

  it.each([
    ["", "the rule is empty"],
    ["example.com:0", "the port must be a number from 1 to 65535"],
    ["example.com:70000", "the port must be a number from 1 to 65535"],
    ["example.com:http", "the port must be a number from 1 to 65535"],
    ["10.0.0.0/33", "the prefix length must be a number from 0 to 32"],
    ["fd00::/129", "the prefix length must be a number from 0 to 128"],
    ["example.com/8", "a CIDR needs an IP address"],
    ["fd00::1:4000:x", "write an IPv6 address with a port in brackets"],
    ["[example.com]:80", "brackets must hold an IPv6 address"],
    ["[::1]4000", "unexpected"],
    ["exa mple.com", "is not a host name"],
    ["*", "is not a host name"],
    ["foo.*.com", "is not a host name"],
    ["http://example.com", "not a URL"],
  ])("rejects %j", (rule, reason) => {
    let error: unknown;
    try {
      createEgressPolicy({ allow: [], deny: [rule] });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(EgressRuleError);
    expect(error).toBeInstanceOf(ConfigError);
    const message = (error as Error).message;
    expect(message).toContain(`--egress-deny ${JSON.stringify(rule)}`);
    expect(message).toContain(reason);
  });

  it("names the flag the bad rule came from", () => {
    expect(() => createEgressPolicy({ allow: ["bad rule"], deny: [] })).toThrow(/^--egress-allow "bad rule": /);
  });
});

describe("describe", () => {
  it("says what is denied and what the rules add", () => {
    const lines = createEgressPolicy({ allow: ["127.0.0.1:4000"], deny: ["203.0.113.0/24"] }).describe();
    expect(lines[0]).toMatch(/^Egress: workers may reach public addresses; denied: unspecified, loopback, private/);
    expect(lines[0]).toContain("link-local and cloud metadata (169.254.0.0/16, fe80::/10)");
    expect(lines[0]).toContain("this server's own addresses");
    expect(lines.slice(1)).toEqual(["Egress allowed (--egress-allow): 127.0.0.1:4000", "Egress denied (--egress-deny): 203.0.113.0/24"]);
    expect(open.describe()).toHaveLength(1);
  });
});

describe("resolveAllowed", () => {
  const lookup: EgressLookup = async (hostname) => {
    if (hostname === "mixed.example") return [{ address: "10.0.0.1", family: 4 }, { address: "198.51.100.4", family: 4 }];
    if (hostname === "inside.example") return [{ address: "127.0.0.1", family: 4 }, { address: "::1", family: 6 }];
    throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: "ENOTFOUND" });
  };

  it("keeps the allowed addresses in resolver order", async () => {
    expect(await resolveAllowed(open, lookup, { host: "mixed.example", port: 443 })).toEqual([{ address: "198.51.100.4", family: 4 }]);
  });

  it("throws the first denial when none is allowed", async () => {
    const error = await resolveAllowed(open, lookup, { host: "inside.example", port: 443 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(EgressDeniedError);
    expect((error as Error).message).toBe(
      "egress denied: inside.example (127.0.0.1):443 is a loopback address; allow it with --egress-allow",
    );
  });

  it("checks an IP literal without a lookup", async () => {
    const error = await resolveAllowed(open, lookup, { host: "[::1]", port: 80 }).catch((e: unknown) => e);
    expect((error as Error).message).toBe("egress denied: [::1]:80 is a loopback address; allow it with --egress-allow");
  });

  it("passes resolver failures through", async () => {
    await expect(resolveAllowed(open, lookup, { host: "nowhere.example", port: 80 })).rejects.toMatchObject({ code: "ENOTFOUND" });
  });
});
