import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { Ajv, type ValidateFunction } from "ajv";
import { Kysely, SqliteDialect } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CORE_ACTIONS } from "../../packages/server/src/api/app.js";
import type { Database } from "../../packages/server/src/store/schema.js";
import { DIALECTS } from "../helpers/dialects.js";
import { startServerProcess, type ServerProcess } from "../helpers/server-process.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import {
  changedTables,
  errorShapeProblem,
  pool,
  prng,
  rawRequest,
  snapshotStore,
  type Prng,
  type RawAnswer,
  type RawRequest,
  type StoreSnapshot,
} from "./http.js";

/**
 * Random and malformed requests of every kind against the HTTP API (SPEC section 5, "Bad input";
 * STYLE section 3): never a 5xx, every non-2xx body in the error shape, nothing stored by a refused
 * request, and the server keeps serving. A seeded PRNG makes every run replayable:
 *
 *   WORKYARD_FUZZ_SEED=<seed printed on failure> npx vitest run test/robustness/fuzz.test.ts
 *
 * Every request generated here is one that must not write: writing requests are sent only with a
 * defect that must refuse them (a schema violation, a bad token, a foreign or unknown worker, a
 * bad secret name). Read-only requests may succeed. The store is snapshotted around every batch.
 */

const REQUESTS_PER_DIALECT = Number(process.env.WORKYARD_FUZZ_REQUESTS ?? 3000);
const PROCESS_REQUESTS = Math.ceil(REQUESTS_PER_DIALECT / 3);
const BATCH = 200;
const CONCURRENCY = 20;
const ACTION_PREFIX = "/api/v3/workers";
/** Values of the target worker's secrets: never in an error body. */
const CANARY_A = "canary-fuzz-a-1c9e";
const CANARY_B = "canary-fuzz-b-77d2";

const seedFromEnv = process.env.WORKYARD_FUZZ_SEED;

/** Read-only actions: a valid request may answer 2xx without writing. */
const READ_ONLY = new Set([
  "ListWorkers",
  "GetWorker",
  "ListCapabilities",
  "FetchAndSaveCapabilities",
  "UpdateSyncCapabilityDisabled",
  "ListRunsForWorker",
  "GetRunLogs",
  "ListSecrets",
  "PullEnv",
  "GetOauthFlow",
  "GetOauthToken",
  "GetOauthStatus",
  "ListTokens",
  "WhoAmI",
  "GetServerInfo",
]);

interface FieldSchema {
  type?: string;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maxItems?: number;
  items?: { properties: Record<string, FieldSchema>; required: string[] };
}

interface ActionInfo {
  name: string;
  auth: "public" | "workspace" | "admin";
  properties: Record<string, FieldSchema>;
  required: string[];
  validate: ValidateFunction;
}

const ajv = new Ajv({ coerceTypes: false, removeAdditional: false, allErrors: false, useDefaults: false, strict: false });
const ACTIONS: ActionInfo[] = CORE_ACTIONS.map((a) => {
  const schema = a.schema as { properties: Record<string, FieldSchema>; required: string[] };
  return { name: a.name, auth: a.auth, properties: schema.properties, required: schema.required, validate: ajv.compile(a.schema) };
});
const ACTION = new Map(ACTIONS.map((a) => [a.name, a]));

/** The world a probe is generated against: tokens and ids made in the server before the run. */
interface World {
  admin: string;
  adminTokenId: string;
  /** A member token of the admin's workspace. */
  member: string;
  expired: string;
  revoked: string;
  /** The owner token of another workspace. */
  other: string;
  otherTokenId: string;
  workerId: string;
  otherWorkerId: string;
  upload: { id: string; signature: string };
}

/** A JSON fragment written verbatim (deep nesting, which JSON.stringify would recurse through). */
class Raw {
  constructor(
    readonly text: string,
    /** What ajv sees in place of the fragment: a value of the same JSON type. */
    readonly stand: unknown,
  ) {}
}

/** Objects without a prototype, so `__proto__` and `constructor` are plain keys. */
function obj(entries: [string, unknown][] = []): Record<string, unknown> {
  const o = Object.create(null) as Record<string, unknown>;
  for (const [k, v] of entries) o[k] = v;
  return o;
}

/** encodeURIComponent, with lone surrogates replaced (it throws on them). */
function encodeComponent(text: string): string {
  return encodeURIComponent(text.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, "\ufffd"));
}

function jsonText(value: unknown): string {
  if (value instanceof Raw) return value.text;
  if (Array.isArray(value)) return `[${value.map(jsonText).join(",")}]`;
  if (value !== null && typeof value === "object") {
    return `{${Object.keys(value)
      .map((k) => `${JSON.stringify(k)}:${jsonText((value as Record<string, unknown>)[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

/** The value as ajv would see it after parsing, with Raw fragments replaced by their stand-ins. */
function shallow(value: unknown): unknown {
  if (value instanceof Raw) return value.stand;
  if (Array.isArray(value)) return value.map(shallow);
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(value)) {
      if (k === "__proto__") continue; // refused by the JSON parser before ajv
      out[k] = shallow((value as Record<string, unknown>)[k]);
    }
    return out;
  }
  return value;
}

function deepArray(depth: number): Raw {
  return new Raw("[".repeat(depth) + "]".repeat(depth), []);
}
function deepObject(depth: number): Raw {
  return new Raw('{"a":'.repeat(depth) + "1" + "}".repeat(depth), {});
}

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------

function randomUnicode(r: Prng, length: number): string {
  const ranges: [number, number][] = [
    [0x20, 0x7e],
    [0xa0, 0x2ff],
    [0x370, 0x3ff],
    [0x400, 0x4ff],
    [0x590, 0x6ff],
    [0x3040, 0x30ff],
    [0x4e00, 0x4fff],
    [0x1f300, 0x1f6ff],
    [0x200b, 0x202e],
    [0xfff0, 0xffff],
    [0x0, 0x1f],
  ];
  let out = "";
  for (let i = 0; i < length; i++) {
    const [lo, hi] = r.pick(ranges);
    out += String.fromCodePoint(r.int(lo, hi));
  }
  return out;
}

/** A random UUID from the seeded PRNG: a replayed run sends the same ids. */
function uuid(r: Prng): string {
  const b = r.bytes(16);
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = b.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Strings of every awkward kind, of any length (some beyond every maxLength). */
function weirdString(r: Prng): string {
  const k = r.int(0, 27);
  switch (k) {
    case 0:
      return "";
    case 1:
      return " \t\n ";
    case 2:
      return "..";
    case 3:
      return "../../../etc/passwd";
    case 4:
      return "..%2F..%2Fetc%2Fpasswd";
    case 5:
      return "%00%2e%2e%c0%af";
    case 6:
      return "\u0000";
    case 7:
      return `a\u0000b${"\u0000".repeat(r.int(1, 8))}`;
    case 8:
      return "💥🚀👩‍👩‍👧‍👦";
    case 9:
      return "\ud800"; // lone surrogate
    case 10:
      return "\udfff\ud800x";
    case 11:
      return "\u202eevil\u202d";
    case 12:
      return "' OR '1'='1' --";
    case 13:
      return '"; DROP TABLE workers; --';
    case 14:
      return "$(rm -rf /) `id` ${HOME}";
    case 15:
      return "<script>alert(1)</script>";
    case 16:
      return r.pick(["__proto__", "constructor", "prototype", "toString", "hasOwnProperty"]);
    case 17:
      return r.pick(["null", "undefined", "NaN", "Infinity", "-1", "0", "true", "[]", "{}"]);
    case 18:
      return uuid(r);
    case 19:
      return "x".repeat(r.int(190, 700));
    case 20:
      return "y".repeat(100 * 1024 + r.int(0, 50 * 1024));
    case 21:
      return randomUnicode(r, r.int(1, 60));
    case 22:
      return r.bytes(r.int(1, 40)).toString("latin1");
    case 23:
      return "line\r\nX-Injected: 1\r\n\r\n";
    case 24:
      return "ok_NAME_1";
    case 25:
      return "Ω".repeat(r.int(50, 400));
    case 26:
      return "%ZZ%%%u0041";
    default:
      return randomUnicode(r, r.int(100, 3000));
  }
}

/** A value that is never of JSON type `type` (numbers of type integer: never a non-negative integer). */
function wrongTypeValue(r: Prng, field: FieldSchema): unknown {
  const candidates: [string, () => unknown][] = [
    ["integer", () => r.pick([0, 7, 2 ** 53 + 2, 1e21])],
    ["negative", () => r.pick([-1, -(2 ** 31)])],
    ["number", () => r.pick([3.14, -0.5, 1e-7, 1.7976931348623157e308])],
    ["boolean", () => r.chance(0.5)],
    ["null", () => null],
    ["array", () => r.pick<unknown>([[], ["a"], [null, 1, "x"], [[[]]], [obj([["workerId", "x"]])]])],
    ["deep-array", () => deepArray(r.int(1_000, 120_000))],
    ["object", () => r.pick<unknown>([obj(), obj([["$gt", ""]]), obj([["a", obj([["b", obj([["c", 1]])]])]])])],
    ["deep-object", () => deepObject(r.int(1_000, 60_000))],
    ["string", () => weirdString(r)],
  ];
  const matches = (kind: string): boolean => {
    switch (field.type) {
      case "string":
        return kind === "string";
      case "boolean":
        return kind === "boolean";
      case "integer":
        return kind === "integer";
      case "number":
        return kind === "integer" || kind === "negative" || kind === "number";
      case "array":
        return kind === "array" || kind === "deep-array";
      case "object":
        return kind === "object" || kind === "deep-object";
      default:
        return false;
    }
  };
  const wrong = candidates.filter(([kind]) => !matches(kind));
  return r.pick(wrong)[1]();
}

/** A string that the schema of `field` accepts (lengths within bounds), of an awkward kind. */
function fittingString(r: Prng, field: FieldSchema): string {
  const min = field.minLength ?? 0;
  const max = field.maxLength ?? 200_000;
  for (let i = 0; i < 20; i++) {
    const s = weirdString(r);
    if (s.length >= min && s.length <= max) return s;
  }
  return "z".repeat(Math.max(min, 1));
}

/** Extra, unknown fields: garbage the server must ignore or refuse, never choke on. */
function addExtras(r: Prng, body: Record<string, unknown>): void {
  const n = r.int(1, 4);
  for (let i = 0; i < n; i++) {
    const key = r.pick(["extra", "x-\u0000", "ключ", "🔑", "", "__proto__", "constructor", "workspaceId", "role", "admin", weirdString(r).slice(0, 40)]);
    body[key] = r.pick<() => unknown>([
      () => weirdString(r),
      () => deepArray(r.int(10, 100_000)),
      () => deepObject(r.int(10, 40_000)),
      () => r.bytes(64).toString("base64"),
      () => obj([["prototype", obj([["polluted", true]])]]),
      () => Array.from({ length: r.int(1, 2000) }, () => r.int(0, 9)),
      () => null,
    ])();
  }
}

// ---------------------------------------------------------------------------------------------
// Probes
// ---------------------------------------------------------------------------------------------

interface Probe extends RawRequest {
  label: string;
  /** reject: must answer a 4xx. read: may answer 2xx (it writes nothing). page: an HTML page route. */
  expect: "reject" | "read" | "page";
}

const json = (token?: string | null, extra: Record<string, string> = {}): Record<string, string> => ({
  "content-type": "application/json",
  ...(token ? { authorization: `Bearer ${token}` } : {}),
  ...extra,
});

/** A token that must not authenticate, as an Authorization header value (or none). */
function badAuthorization(r: Prng, w: World): string | undefined {
  return r.pick<() => string | undefined>([
    () => undefined,
    () => "",
    () => "Bearer",
    () => "Bearer ",
    () => `Bearer wy_${r.bytes(32).toString("base64url")}`,
    () => `Bearer ${w.expired}`,
    () => `bearer ${w.expired}`,
    () => `Bearer ${w.revoked}`,
    () => `Bearer ${w.admin}x`,
    () => `Bearer ${w.admin.slice(0, -1)}`,
    () => `Bearer ${w.admin} ${w.admin}`,
    () => `Basic ${Buffer.from(`admin:${w.admin}`).toString("base64")}`,
    () => `Token ${w.admin}`,
    () => w.admin,
    () => `Bearer ${"A".repeat(r.int(1000, 8000))}`,
    () => `Bearer ${"A".repeat(r.int(20_000, 100_000))}`, // beyond Node's 16 KiB of headers
    () => `Bearer ${encodeComponent(randomUnicode(r, 20))}`,
    () => `Bearer ${r.bytes(40).toString("latin1").replace(/[^\x20-\x7e\x80-\xff]/g, "?")}`,
  ])();
}

/** A body the action's schema accepts, aimed at the world's worker; `null` if the action has none. */
function validBody(r: Prng, w: World, action: string): Record<string, unknown> {
  const workerId = w.workerId;
  switch (action) {
    case "CreateWorker":
      return obj([["name", "fuzz"], ["uploadType", "source"]]);
    case "UpdateWorker":
      return obj([["workerId", workerId], ["uploadType", "source"]]);
    case "UpsertSecrets":
      return obj([["workerId", workerId], ["secrets", [obj([["key", "FUZZ_OK"], ["value", "v"]])]]]);
    case "DeleteSecret":
      return obj([["workerId", workerId], ["key", "A"]]);
    case "RunCapability":
    case "UpdateSyncCapabilityDisabled":
      return obj([["workerId", workerId], ["capabilityKey", "echo"], ["disabled", true]]);
    case "StartOauth":
    case "GetOauthToken":
    case "GetOauthStatus":
    case "RevokeOauth":
      return obj([["workerId", workerId], ["oauthCapabilityKey", "demoAuth"]]);
    case "GetOauthFlow":
      return obj([["workerId", workerId], ["state", "s"], ["waitMs", 0]]);
    case "GetRunLogs":
      return obj([["workerId", workerId], ["runId", uuid(r)]]);
    case "CreateToken":
      return obj([["name", "fuzz-token"]]);
    case "RevokeToken":
      return obj([["tokenId", w.adminTokenId]]);
    case "CliLoginRedeem":
      return obj([["sessionId", uuid(r)]]);
    case "CreateWorkspace":
      return obj([["name", "fuzz-space"]]);
    case "RotateKey":
      return obj([["keepOldKeys", true]]);
    default: {
      const info = ACTION.get(action);
      return info?.required.includes("workerId") || info?.properties.workerId ? obj([["workerId", workerId]]) : obj();
    }
  }
}

/** A body for `action` that its schema refuses: a field of a wrong type or size, a missing field, or not an object. */
function schemaInvalidBody(r: Prng, w: World, info: ActionInfo): unknown {
  for (let attempt = 0; attempt < 30; attempt++) {
    const fields = Object.keys(info.properties);
    let body: unknown;
    const kind = fields.length === 0 ? "not-object" : r.pick(["wrong-type", "wrong-type", "wrong-size", "missing", "not-object", "array-items"]);
    if (kind === "not-object") {
      body = r.pick<() => unknown>([
        () => [],
        () => [validBody(r, w, info.name)],
        () => r.int(-5, 5),
        () => weirdString(r),
        () => null,
        () => true,
        () => deepArray(r.int(1, 100_000)),
      ])();
    } else {
      const b = validBody(r, w, info.name);
      const field = r.pick(fields);
      const schema = info.properties[field]!;
      if (kind === "wrong-type") b[field] = wrongTypeValue(r, schema);
      else if (kind === "wrong-size") {
        if (schema.type === "string" && schema.maxLength !== undefined) b[field] = "s".repeat(schema.maxLength + r.pick([1, 2, 100, 100 * 1024]));
        else if (schema.type === "string" && schema.minLength) b[field] = "";
        else if (schema.type === "array" && schema.maxItems !== undefined) {
          b[field] = Array.from({ length: schema.maxItems + r.int(1, 50) }, (_, i) => obj([["key", `K${i}`], ["value", "v"]]));
        } else if (schema.type === "integer") b[field] = r.pick([-1, 0.5, 1.5]);
        else b[field] = wrongTypeValue(r, schema);
      } else if (kind === "missing") {
        if (info.required.length === 0) continue;
        delete b[r.pick(info.required)];
        for (const f of Object.keys(b)) if (r.chance(0.3)) delete b[f];
      } else {
        // An array of objects with one broken entry.
        const arrayField = fields.find((f) => info.properties[f]!.type === "array");
        if (!arrayField) continue;
        const entries: unknown[] = Array.from({ length: r.int(0, 5) }, (_, i) => obj([["key", `OK_${i}`], ["value", "v"]]));
        const broken = r.pick<() => unknown>([
          () => weirdString(r),
          () => null,
          () => r.int(0, 9),
          () => [],
          () => obj([["key", "NO_VALUE"]]),
          () => obj([["value", "no key"]]),
          () => obj([["key", wrongTypeValue(r, { type: "string" })], ["value", "v"]]),
          () => obj([["key", "WRONG_VALUE"], ["value", wrongTypeValue(r, { type: "string" })]]),
          () => obj([["key", "K".repeat(257 + r.int(0, 1000))], ["value", "v"]]),
          () => deepObject(r.int(10, 20_000)),
        ])();
        entries.splice(r.int(0, entries.length), 0, broken);
        b[arrayField] = entries;
      }
      if (r.chance(0.3)) addExtras(r, b);
      body = b;
    }
    if (!info.validate(shallow(body))) return body;
  }
  return [];
}

/**
 * A body the schema accepts but the server must refuse without writing, with the token to send:
 * an unknown or foreign worker, the other workspace's token, a bad secret name, nothing to build.
 */
function semanticReject(r: Prng, w: World, info: ActionInfo): { body: Record<string, unknown>; token: string; expect: Probe["expect"] } | undefined {
  const foreignId = (): string =>
    r.pick<() => string>([
      () => uuid(r),
      () => w.otherWorkerId,
      () => fittingString(r, { minLength: 1, maxLength: 200 }),
      () => `${w.workerId} `,
      () => w.workerId.toUpperCase(),
      () => `${w.workerId}\u0000`,
      () => `%${w.workerId}`,
    ])();
  const b = validBody(r, w, info.name);
  const withExtras = () => {
    if (r.chance(0.25)) addExtras(r, b);
    return b;
  };
  const scoped = "workerId" in b;
  // A worker-scoped action on a worker the caller cannot see: 404, whatever the action.
  if (scoped && r.chance(0.5)) {
    if (r.chance(0.5)) {
      b.workerId = foreignId();
      return { body: withExtras(), token: w.admin, expect: READ_ONLY.has(info.name) ? "read" : "reject" };
    }
    return { body: withExtras(), token: w.other, expect: "reject" };
  }
  switch (info.name) {
    case "CreateWorker":
      // Blank or, trimmed, longer than 100 characters: refused by the service.
      b.name = r.pick([" ", "\t\n", " ".repeat(400), "n".repeat(r.int(101, 500)), `  ${"m".repeat(101)}  `]);
      return { body: withExtras(), token: r.pick([w.admin, w.other, w.member]), expect: "reject" };
    case "UpsertSecrets": {
      // One bad name (anywhere), a value over 64 KiB, or one entry too many for the worker.
      const entries: Record<string, unknown>[] = Array.from({ length: r.int(0, 6) }, (_, i) => obj([["key", `FUZZ_${i}`], ["value", weirdString(r).slice(0, 1000)]]));
      const variant = r.int(0, 2);
      if (variant === 0) {
        const badName = r.pick(["", "1ABC", "A-B", "A B", "A=B", "ÄÖ", "A\u0000", "😀", "A.B", "-", "$X", weirdString(r).slice(0, 256)]);
        if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(badName)) return undefined;
        entries.splice(r.int(0, entries.length), 0, obj([["key", badName], ["value", "v"]]));
      } else if (variant === 1) {
        entries.splice(r.int(0, entries.length), 0, obj([["key", "TOO_BIG"], ["value", "v".repeat(64 * 1024 + r.int(1, 80 * 1024))]]));
      } else {
        // The worker holds two secrets: 499 new ones make 501, one over the limit.
        for (let i = entries.length; i < 499; i++) entries.push(obj([["key", `FILL_${i}`], ["value", "v"]]));
      }
      b.secrets = entries;
      return { body: withExtras(), token: w.admin, expect: "reject" };
    }
    case "DeleteSecret":
      b.key = r.pick(["MISSING", "a", "", "A ", "B\u0000", weirdString(r).slice(0, 256)]);
      if (b.key === "A" || b.key === "B") return undefined;
      return { body: withExtras(), token: w.admin, expect: "reject" };
    case "RunCapability":
    case "BuildWorker":
    case "StartOauth":
    case "RevokeOauth":
    case "UpdateSyncCapabilityDisabled":
      // The worker has no deployment and no upload: nothing to run, build, connect or revoke.
      if ("capabilityKey" in b) b.capabilityKey = fittingString(r, { minLength: 1, maxLength: 200 });
      if ("oauthCapabilityKey" in b) b.oauthCapabilityKey = fittingString(r, { minLength: 1, maxLength: 200 });
      if ("stream" in b || r.chance(0.5)) b.stream = r.chance(0.5);
      return { body: withExtras(), token: w.admin, expect: "reject" };
    case "CreateToken":
      b.expiresIn = r.pick(["forever", "-5 days", "1000 years", "40000", "abc", "1e9", "5 fortnights", "∞", "\u0000", "   x"]);
      return { body: withExtras(), token: r.pick([w.admin, w.member]), expect: "reject" };
    case "RevokeToken":
      // Another workspace's token, or one that does not exist.
      return r.chance(0.5)
        ? { body: obj([["tokenId", w.otherTokenId]]), token: w.admin, expect: "reject" }
        : { body: obj([["tokenId", fittingString(r, { minLength: 1, maxLength: 200 })]]), token: w.other, expect: "reject" };
    case "CliLoginRedeem":
      b.sessionId = fittingString(r, { minLength: 1, maxLength: 200 });
      return { body: withExtras(), token: "", expect: "reject" };
    case "CreateWorkspace":
      // Not an admin, or a blank name.
      return r.chance(0.6)
        ? { body: withExtras(), token: r.pick([w.member, w.other]), expect: "reject" }
        : { body: obj([["name", r.pick([" ", "\t", " ".repeat(200)])]]), token: w.admin, expect: "reject" };
    case "RotateKey":
      return { body: withExtras(), token: r.pick([w.member, w.other]), expect: "reject" };
    case "CliLoginInit":
    case "UpdateWorker":
    case "DeleteWorker":
      // These would write with any body the schema accepts and a token that may use the worker.
      return undefined;
    default:
      if (READ_ONLY.has(info.name)) {
        for (const [field, schema] of Object.entries(info.properties)) {
          if (field === "workerId" || field === "waitMs") continue;
          if (schema.type === "string") b[field] = fittingString(r, schema);
          if (schema.type === "boolean") b[field] = r.chance(0.5);
        }
        return { body: withExtras(), token: r.pick([w.admin, w.member, w.other]), expect: "read" };
      }
      return undefined;
  }
}

/** Values that are never a valid `field`: of other JSON types, deep, or too long (unicode and NUL included). */
function sweepValues(field: FieldSchema): unknown[] {
  const others: unknown[] = [0, -1, 1.5, 1e308, true, null, [], ["x"], obj(), obj([["k", "v"]]), deepArray(50_000), deepObject(20_000), "s"];
  const values = others.filter((v) => {
    if (field.type === "string") return typeof v !== "string";
    if (field.type === "boolean") return typeof v !== "boolean";
    if (field.type === "integer") return !(typeof v === "number" && Number.isInteger(v) && v >= (field.minimum ?? -Infinity));
    if (field.type === "array") return !Array.isArray(v) && !(v instanceof Raw && Array.isArray(v.stand));
    return true;
  });
  if (field.type === "string" && field.maxLength !== undefined) {
    const over = field.maxLength + 1;
    values.push("x".repeat(100 * 1024), "😀".repeat(over), `${"\u0000".repeat(over)}`, "\ud800".repeat(over));
  }
  if (field.type === "string" && field.minLength) values.push("");
  if (field.type === "array" && field.maxItems !== undefined) values.push(Array.from({ length: field.maxItems + 1 }, (_, i) => obj([["key", `K${i}`], ["value", "v"]])));
  if (field.type === "array" && field.items) {
    // Each field of an entry, wrong in turn.
    for (const [name, schema] of Object.entries(field.items.properties)) {
      for (const bad of sweepValues(schema)) values.push([obj([["key", "OK"], ["value", "v"]]), obj([["key", "K"], ["value", "v"], [name, bad]])]);
    }
    values.push([obj([["key", "NO_VALUE"]])], [obj([["value", "no key"]])], ["entry"], [null]);
  }
  return values;
}

/**
 * Every field of every action's schema, with every kind of wrong value; every required field
 * missing; and bodies that are not objects. Sent with the admin token: only the schema refuses them.
 */
function sweepProbes(r: Prng, w: World): Probe[] {
  const probes: Probe[] = [];
  const add = (info: ActionInfo, label: string, body: unknown) => {
    if (info.validate(shallow(body))) throw new Error(`sweep: ${info.name} ${label} is valid`);
    probes.push({ label: `schema sweep ${info.name} ${label}`, method: "POST", path: `${ACTION_PREFIX}${info.name}`, headers: json(w.admin), body: jsonText(body), expect: "reject" });
  };
  for (const info of ACTIONS) {
    for (const [field, schema] of Object.entries(info.properties)) {
      for (const bad of sweepValues(schema)) {
        const body = validBody(r, w, info.name);
        body[field] = bad;
        add(info, `${field}=${jsonText(bad).slice(0, 30)}`, body);
      }
    }
    for (const field of info.required) {
      const body = validBody(r, w, info.name);
      delete body[field];
      add(info, `without ${field}`, body);
    }
    for (const body of [[], [validBody(r, w, info.name)], 1, "text", null, true, deepArray(100_000)]) add(info, `body ${jsonText(body).slice(0, 20)}`, body);
  }
  return probes;
}

function actionProbe(r: Prng, w: World): Probe {
  const info = r.pick(ACTIONS);
  const path = `${ACTION_PREFIX}${info.name}`;
  const token = r.pick([w.admin, w.admin, w.member, w.other, w.expired, w.revoked, null]);
  const body = schemaInvalidBody(r, w, info);
  return { label: `schema-invalid ${info.name}`, method: "POST", path, headers: json(token), body: jsonText(body), expect: "reject" };
}

function semanticProbe(r: Prng, w: World): Probe {
  for (;;) {
    const info = r.pick(ACTIONS);
    const made = semanticReject(r, w, info);
    if (!made) continue;
    return {
      label: `refused ${info.name}`,
      method: "POST",
      path: `${ACTION_PREFIX}${info.name}`,
      headers: json(made.token || null),
      body: jsonText(made.body),
      expect: made.expect,
    };
  }
}

function authProbe(r: Prng, w: World): Probe {
  const info = r.pick(ACTIONS.filter((a) => a.auth !== "public"));
  const body = validBody(r, w, info.name);
  const authorization = badAuthorization(r, w);
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (authorization !== undefined) headers.authorization = authorization;
  if (authorization === undefined && r.chance(0.3)) headers["x-authorization"] = `Bearer ${w.admin}`;
  return { label: `bad token ${info.name}`, method: "POST", path: `${ACTION_PREFIX}${info.name}`, headers, body: jsonText(body), expect: "reject" };
}

function parses(text: string): boolean {
  try {
    JSON.parse(text.replace(/^\ufeff/, ""));
    return true;
  } catch {
    return false;
  }
}

function badJsonProbe(r: Prng, w: World): Probe {
  const info = r.pick(ACTIONS);
  const valid = jsonText(validBody(r, w, info.name));
  const body = r.pick<() => string | Buffer>([
    () => valid.slice(0, r.int(0, valid.length - 1)),
    () => `${valid}${r.pick([" trailing", "}", ",", "\u0000", "{}", "]"])}`,
    () => r.bytes(r.int(1, 4000)),
    () => Buffer.concat([Buffer.from(valid.slice(0, -1)), r.bytes(r.int(1, 50))]),
    () => r.pick(["", " ", "{", "}", "[", "nul", "tru", "undefined", "NaN", "{'a':1}", '{"a":1,}', "{a:1}", '{"a" 1}', "\u0000", "//{}"]),
    () => valid.replace(/"/g, "'"),
    () => `{"workerId": "${w.workerId}", "__proto__": {"admin": true}}`,
    () => `{"name": "x", "constructor": {"prototype": {"admin": true}}}`,
    () => `{"a": "${"\\u".repeat(r.int(1, 5))}zz"}`,
    () => `{"a": "\\ud800\\u0000${"\\".repeat(r.int(1, 3))}`,
    () => `\ufeff${valid.slice(0, -1)}`,
    () => "[".repeat(r.int(10_000, 300_000)),
    () => `{"a":${"[".repeat(r.int(1000, 200_000))}`,
    () => Buffer.from(valid, "utf16le"),
    () => zlib.gzipSync(valid),
  ])();
  // `'{}'` with its quotes swapped is still `{}`, and `{` with one random byte can be `{}`.
  if (parses(typeof body === "string" ? body : body.toString("utf8"))) return badJsonProbe(r, w);
  const token = r.pick([w.admin, null, w.other]);
  const headers = json(token);
  if (typeof body !== "string" && r.chance(0.2)) headers["content-encoding"] = r.pick(["gzip", "br", "identity", "bogus"]);
  return { label: `bad JSON ${info.name}`, method: "POST", path: `${ACTION_PREFIX}${info.name}`, headers, body, expect: "reject" };
}

function unknownActionProbe(r: Prng, w: World): Probe {
  const known = r.pick(ACTIONS).name;
  const name = r.pick<() => string>([
    () => known.toLowerCase(),
    () => known.toUpperCase(),
    () => `${known}s`,
    () => `${known}/`,
    () => `${known}/x`,
    () => `${known}.json`,
    () => `${known}%20`,
    () => `${known}%00`,
    () => `/${known}`,
    () => `${known.slice(0, -1)}`,
    () => "",
    () => "/",
    () => encodeComponent(randomUnicode(r, r.int(1, 30))),
    () => r.bytes(r.int(1, 40)).toString("base64url"),
    () => r.pick(["DeleteEverything", "Admin", "Eval", "..", "%2e%2e", "%2e%2e%2fListWorkers", "..%2FListWorkers", "Debug", "Internal"]),
  ])();
  // Whatever the name resolves to, the body is refused by every schema (or is read-only).
  const body = r.pick(["[]", "1", "null", jsonText(validBody(r, w, "ListWorkers")), '"x"']);
  return { label: `unknown action ${JSON.stringify(name.slice(0, 40))}`, method: "POST", path: `${ACTION_PREFIX}${name}`, headers: json(w.admin), body, expect: "read" };
}

/** Content types other than JSON, with a body that would be accepted if read as JSON. */
function contentTypeProbe(r: Prng, w: World): Probe {
  const info = r.pick(ACTIONS.filter((a) => a.name !== "CliLoginInit" && a.name !== "RotateKey"));
  const valid = jsonText(validBody(r, w, info.name));
  const type = r.pick<string | undefined>([
    undefined,
    "",
    "text/plain",
    "text/plain; charset=utf-8",
    "text/html",
    "text/json",
    "application/xml",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/form-data; boundary=----fuzz",
    "application/octet-stream",
    "image/png",
    "application/jsonx",
    "application/json-seq",
    "application/x-ndjson",
    "json",
    "application",
    "/",
    ";;;",
    "*/*",
    "application/*",
  ]);
  const headers: Record<string, string> = { authorization: `Bearer ${w.admin}` };
  if (type !== undefined) headers["content-type"] = type;
  const body = r.pick([valid, `name=fuzz&workerId=${w.workerId}`, "<name>x</name>", valid]);
  // A body the action would accept as JSON: only the content type may refuse it (415).
  return { label: `content-type ${JSON.stringify(type)} ${info.name}`, method: "POST", path: `${ACTION_PREFIX}${info.name}`, headers, body, expect: "reject" };
}

const KNOWN_METHODS = ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "PROPFIND", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "PURGE", "REPORT", "MERGE", "NOTIFY", "SUBSCRIBE", "LINK", "QUERY"];
const UNKNOWN_METHODS = ["FOO", "BREW", "HACK", "POSTX", "XPOST", "GETS"];

function methodProbe(r: Prng, w: World): Probe {
  const info = r.pick(ACTIONS);
  const method = r.chance(0.85) ? r.pick(KNOWN_METHODS) : r.pick(UNKNOWN_METHODS);
  const path = r.chance(0.8) ? `${ACTION_PREFIX}${info.name}` : `/api/v3/uploads/${w.upload.id}`;
  const hasBody = method !== "GET" && method !== "HEAD" && method !== "TRACE" && r.chance(0.7);
  return {
    label: `method ${method}`,
    method,
    path,
    headers: json(w.admin),
    ...(hasBody ? { body: jsonText(validBody(r, w, info.name)) } : {}),
    expect: "reject",
  };
}

function randomPathProbe(r: Prng, w: World): Probe {
  const segments = ["api", "v3", "workers", "uploads", "..", ".", "%2e%2e", "%2E%2E%2F", "%2F", "%00", "%ZZ", "%", "%%", "%u0041", "~", "%c0%ae", "\\", "..\\..", "healthz", "", w.upload.id, w.workerId];
  const n = r.int(1, 8);
  const parts: string[] = [];
  for (let i = 0; i < n; i++) {
    parts.push(
      r.pick<() => string>([
        () => r.pick(segments),
        () => r.pick(segments),
        () => encodeComponent(randomUnicode(r, r.int(1, 10))),
        () => r.bytes(r.int(1, 10)).toString("latin1").replace(/[^\x21-\x7e\x80-\xff]/g, "_"),
        () => "a".repeat(r.int(100, 4000)),
        () => `${ACTION_PREFIX.slice(1)}${r.pick(ACTIONS).name}`,
      ])(),
    );
  }
  let path = `/${parts.join(r.pick(["/", "/", "//", "/./"]))}`;
  if (parts[0] === "workers" || parts[0] === "cli-login") path = `/x${path}`;
  if (r.chance(0.3)) path += `?${r.pick(["a=1", "workerId=../..", "x=%00", "%ZZ", "q=" + "q".repeat(r.int(1, 4000)), "__proto__[admin]=1", "&&&==="])}`;
  const method = r.pick(["GET", "POST", "POST", "HEAD", "DELETE"]);
  const hasBody = method === "POST" || method === "DELETE";
  // `[]` is refused by every action schema: whatever the path resolves to, nothing is written.
  return { label: "random path", method, path, headers: json(w.admin), ...(hasBody ? { body: "[]" } : {}), expect: "read" };
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** A multipart body from parts; the caller may break it afterwards. */
function multipart(boundary: string, parts: { name: string; filename?: string; type?: string; body: Buffer | string; rawHeaders?: string }[]): Buffer {
  const chunks: Buffer[] = [];
  for (const part of parts) {
    const disposition = `Content-Disposition: form-data; name="${part.name}"${part.filename !== undefined ? `; filename="${part.filename}"` : ""}`;
    const headers = part.rawHeaders ?? `${disposition}\r\n${part.type ? `Content-Type: ${part.type}\r\n` : ""}`;
    chunks.push(Buffer.from(`--${boundary}\r\n${headers}\r\n`), Buffer.isBuffer(part.body) ? part.body : Buffer.from(part.body), Buffer.from("\r\n"));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(chunks);
}

/** An archive that is never a valid project: the upload must be refused whatever the fields. */
function badArchive(r: Prng): Buffer {
  return r.pick<() => Buffer>([
    () => r.bytes(r.int(0, 5000)),
    () => zlib.gzipSync(r.bytes(r.int(1, 5000))),
    () => zlib.gzipSync(Buffer.alloc(1024)),
    () => Buffer.from("this is not an archive\n"),
    () => zlib.gzipSync(Buffer.from("not a tar\n".repeat(100))).subarray(0, r.int(5, 40)),
    () => Buffer.alloc(0),
  ])();
}

function uploadProbe(r: Prng, w: World): Probe {
  const boundary = r.pick(["----fuzz", `b${r.bytes(8).toString("hex")}`, "x".repeat(r.int(60, 200)), "a b", "\"quoted\"", "-"]);
  const forgedSignature = r.pick<() => string>([
    () => (w.upload.signature[0] === "A" ? "B" : "A") + w.upload.signature.slice(1),
    () => "",
    () => `${w.upload.signature}x`,
    () => r.bytes(32).toString("base64url"),
    () => "s".repeat(r.int(4000, 6000)),
    () => weirdString(r).slice(0, 3000),
  ])();
  const realId = w.upload.id;
  const idInPath = r.pick<() => string>([
    () => realId,
    () => realId,
    () => uuid(r),
    () => encodeComponent(weirdString(r).slice(0, 60)) || "x",
    () => "..%2F..%2Fworkers",
    () => "%ZZ",
    () => "%00",
    () => "u".repeat(r.int(101, 400)),
  ])();
  // Fields: the real id with a forged signature, the real signature for another id, or no fields.
  const fields: [string, string][] = [];
  const variant = r.int(0, 5);
  if (variant === 0) fields.push(["uploadId", realId], ["signature", forgedSignature]);
  else if (variant === 1) fields.push(["uploadId", uuid(r)], ["signature", w.upload.signature]);
  else if (variant === 2) fields.push(["uploadId", realId], ["signature", w.upload.signature]); // real: the archive is bad
  else if (variant === 3) fields.push(["signature", w.upload.signature]);
  else if (variant === 5) fields.push(["uploadId", safeDecode(idInPath)], ["signature", forgedSignature]); // the id the path names
  for (let i = 0, extra = r.chance(0.3) ? r.int(1, 25) : 0; i < extra; i++) fields.push([r.pick(["uploadId", "signature", `f${i}`, "file", ""]), weirdString(r).slice(0, 200)]);
  const parts: Parameters<typeof multipart>[1] = fields.map(([name, body]) => ({ name, body }));
  const files = r.pick([0, 1, 1, 1, 2, 3]);
  for (let i = 0; i < files; i++) {
    parts.splice(r.chance(0.2) ? 0 : parts.length, 0, {
      name: r.chance(0.85) ? "file" : r.pick(["archive", "", "FILE", "file[]"]),
      filename: r.pick(["archive.tar.gz", "", "../../etc/passwd", "\u0000.tgz", "a".repeat(300)]),
      type: r.pick(["application/gzip", "application/octet-stream", "text/plain"]),
      body: badArchive(r),
    });
  }
  if (r.chance(0.1)) parts.push({ name: "x", body: "y", rawHeaders: r.pick(["Garbage\r\n", "Content-Disposition: nonsense\r\n", "Content-Disposition: form-data\r\n", ""]) });
  let body = multipart(boundary.replace(/^"|"$/g, ""), parts);
  const breakage = r.int(0, 9);
  if (breakage === 0) body = body.subarray(0, r.int(0, body.length - 1));
  else if (breakage === 1) body = Buffer.concat([body, r.bytes(r.int(1, 500))]);
  else if (breakage === 2) body = r.bytes(r.int(0, 3000));
  else if (breakage === 3) body = Buffer.from(body.toString("latin1").replaceAll(`--${boundary}--`, "").replaceAll("\r\n", "\n"), "latin1");
  const type = r.pick<() => string | undefined>([
    () => `multipart/form-data; boundary=${boundary}`,
    () => `multipart/form-data; boundary=${boundary}`,
    () => `multipart/form-data; boundary=${boundary}`,
    () => "multipart/form-data",
    () => "multipart/form-data; boundary=",
    () => `multipart/form-data; boundary=other${boundary}`,
    () => `multipart/mixed; boundary=${boundary}`,
    () => "application/json",
    () => undefined,
  ])();
  const headers: Record<string, string> = {};
  if (type !== undefined) headers["content-type"] = type;
  if (r.chance(0.2)) headers.authorization = `Bearer ${w.admin}`;
  return { label: `upload (fields variant ${variant}, breakage ${breakage})`, method: "POST", path: `/api/v3/uploads/${idInPath}`, headers, body, expect: "reject" };
}

function oversizeProbe(r: Prng, w: World): Probe {
  const info = r.pick(ACTIONS);
  const valid = jsonText(validBody(r, w, info.name));
  const padding = "p".repeat(1024 * 1024 + r.int(1, 512 * 1024));
  const body = `${valid.slice(0, -1)}${valid.length > 2 ? "," : ""}"padding":"${padding}"}`;
  const headers = json(w.admin);
  if (r.chance(0.4)) headers["transfer-encoding"] = "chunked";
  return { label: `oversize ${info.name}`, method: "POST", path: `${ACTION_PREFIX}${info.name}`, headers, body, expect: "reject" };
}

/** The server-rendered pages answer HTML: checked for "no 5xx" and "no echo", not the JSON shape. */
function pageProbe(r: Prng, w: World): Probe {
  const id = r.pick([uuid(r), encodeComponent(weirdString(r).slice(0, 80)) || "x", "%00", "..%2F..", "%ZZ"]);
  return r.pick<() => Probe>([
    () => ({ label: "login page", method: "GET", path: `/cli-login/${id}`, expect: "page" }),
    () => ({
      label: "login form",
      method: "POST",
      path: `/cli-login/${id}`,
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: `token=${encodeComponent(r.pick([w.revoked, w.expired, "garbage", weirdString(r).slice(0, 100)]))}`,
      expect: "page",
    }),
    () => ({
      label: "oauth callback",
      method: "GET",
      path: `/workers/oauth/callback?${r.pick(["", `state=${encodeComponent(weirdString(r).slice(0, 100))}&code=x`, "error=access_denied&state=%00", "state=" + "s".repeat(3000)])}`,
      expect: "page",
    }),
  ])();
}

function readProbe(r: Prng, w: World): Probe {
  return r.pick<() => Probe>([
    () => ({ label: "health", method: "GET", path: "/healthz", expect: "read" }),
    () => ({ label: "ListWorkers with extras", method: "POST", path: `${ACTION_PREFIX}ListWorkers`, headers: json(r.pick([w.admin, w.other])), body: jsonText((() => { const b = obj(); addExtras(r, b); return b; })()), expect: "read" }),
    () => ({ label: "GetServerInfo", method: "POST", path: `${ACTION_PREFIX}GetServerInfo`, headers: json(null), body: "{}", expect: "read" }),
    () => ({ label: "PullEnv", method: "POST", path: `${ACTION_PREFIX}PullEnv`, headers: json(w.admin), body: jsonText(obj([["workerId", w.workerId]])), expect: "read" }),
  ])();
}

const GENERATORS: [number, (r: Prng, w: World) => Probe][] = [
  [20, actionProbe],
  [14, semanticProbe],
  [10, authProbe],
  [10, badJsonProbe],
  [7, unknownActionProbe],
  [7, contentTypeProbe],
  [7, methodProbe],
  [7, randomPathProbe],
  [10, uploadProbe],
  [3, oversizeProbe],
  [2, pageProbe],
  [3, readProbe],
];
const TOTAL_WEIGHT = GENERATORS.reduce((sum, [weight]) => sum + weight, 0);

function generate(r: Prng, w: World): Probe {
  let roll = r.next() * TOTAL_WEIGHT;
  for (const [weight, make] of GENERATORS) {
    roll -= weight;
    if (roll < 0) return make(r, w);
  }
  return GENERATORS[0]![1](r, w);
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

function describeProbe(index: number, probe: Probe): string {
  const body = probe.body === undefined ? "" : Buffer.isBuffer(probe.body) ? `<${probe.body.length} bytes: ${probe.body.subarray(0, 64).toString("hex")}${probe.body.length > 64 ? "..." : ""}>` : probe.body;
  const head = body.length > 160 ? `${body.slice(0, 160)}... (${body.length} chars)` : body;
  const headers = Object.entries(probe.headers ?? {})
    .map(([k, v]) => `${k}: ${v.length > 80 ? `${v.slice(0, 80)}...` : v}`)
    .join("; ");
  const path = probe.path.length > 160 ? `${probe.path.slice(0, 160)}... (${probe.path.length} chars)` : probe.path;
  return `#${index} ${probe.label}: ${probe.method} ${path} [${headers}] ${JSON.stringify(head)}`;
}

interface Violation {
  /** What went wrong, without ids: violations of one kind are reported together. */
  kind: string;
  detail: string;
}

/** The message the server logged for a request id (500s), ids and paths removed. */
function loggedError(logs: string, requestId: unknown): string | undefined {
  if (typeof requestId !== "string") return undefined;
  const line = logs.split("\n").find((l) => l.includes(requestId));
  if (!line) return undefined;
  try {
    const entry = JSON.parse(line) as { err?: { message?: string; code?: string }; msg?: string };
    return `${entry.err?.code ? `${entry.err.code} ` : ""}${entry.err?.message ?? entry.msg ?? ""}`.replace(/[0-9a-f-]{36}|\/\S+/g, "<x>").slice(0, 160);
  } catch {
    return line.slice(0, 160);
  }
}

/** What is wrong with an answer to a probe, or undefined. */
function problemWith(probe: Probe, answer: RawAnswer, logs: () => string): Violation | undefined {
  const text = answer.text.length > 300 ? `${answer.text.slice(0, 300)}...` : answer.text;
  const code = typeof answer.json?.code === "string" ? answer.json.code : undefined;
  if (answer.status >= 500) {
    const logged = loggedError(logs(), answer.json?.request_id);
    return { kind: `answered ${answer.status} ${code ?? ""} to ${probe.label.split(" ")[0]} requests${logged ? ` (server log: ${logged})` : ""}`, detail: `answered ${answer.status}: ${text}` };
  }
  if (answer.status < 200) return { kind: `answered ${answer.status}`, detail: text };
  if (probe.expect === "reject" && answer.status < 400) return { kind: `accepted a request that must be refused: ${probe.label}`, detail: `answered ${answer.status}: ${text}` };
  if (answer.status >= 300 && (answer.text.includes(CANARY_A) || answer.text.includes(CANARY_B))) return { kind: "an error body shows a secret value", detail: text };
  if (answer.status < 300 || probe.method === "HEAD") return undefined;
  if (probe.expect === "page" && /^text\/html\b/.test(String(answer.headers["content-type"] ?? ""))) return undefined;
  const shape = errorShapeProblem(answer);
  if (!shape) return undefined;
  const what = code ?? (typeof answer.json?.message === "string" ? answer.json.message : text.slice(0, 60));
  return { kind: `${answer.status} body not in the error shape (${what})`, detail: `answered ${answer.status} (${shape}): ${text}` };
}

interface Target {
  url: string;
  world: World;
  snapshot(): Promise<StoreSnapshot>;
  /** Everything the server logged so far. */
  logs(): string;
  /** A reason the server is gone (process exited), or undefined. */
  gone(): string | undefined;
}

/** Creates the world through the API itself: tokens of every kind, a worker with secrets, a foreign worker. */
async function makeWorld(url: string, adminToken: string): Promise<World> {
  const call = async (action: string, body: unknown, token: string | null = adminToken) => {
    const answer = await rawRequest(url, { method: "POST", path: `${ACTION_PREFIX}${action}`, headers: json(token), body: JSON.stringify(body) });
    if (answer.status !== 200) throw new Error(`${action} answered ${answer.status}: ${answer.text}`);
    return answer.json;
  };
  const whoami = await call("WhoAmI", {});
  const member = await call("CreateToken", { name: "fuzz-member" });
  const revoked = await call("CreateToken", { name: "fuzz-revoked" });
  await call("RevokeToken", { tokenId: revoked.id });
  const expired = await call("CreateToken", { name: "fuzz-expired", expiresIn: "1ms" });
  const space = await call("CreateWorkspace", { name: "fuzz-other" });
  const otherWho = await call("WhoAmI", {}, space.token);
  const created = await call("CreateWorker", { name: "fuzz-target", uploadType: "source" });
  await call("UpsertSecrets", { workerId: created.worker.workerId, secrets: [{ key: "A", value: CANARY_A }, { key: "B", value: CANARY_B }] });
  const foreign = await call("CreateWorker", { name: "fuzz-foreign" }, space.token);
  await new Promise((resolve) => setTimeout(resolve, 20)); // the 1 ms token has expired
  return {
    admin: adminToken,
    adminTokenId: whoami.tokenId,
    member: member.token,
    expired: expired.token,
    revoked: revoked.token,
    other: space.token,
    otherTokenId: otherWho.tokenId,
    workerId: created.worker.workerId,
    otherWorkerId: foreign.worker.workerId,
    upload: { id: created.fields.uploadId, signature: created.fields.signature },
  };
}

/**
 * Sends `total` probes in batches; after each batch the server answers a health check and
 * ListWorkers, and the store is exactly as before the batch. Answers the violations found.
 */
async function fuzz(target: Target, seed: number, requested: number, options: { sweep: boolean }): Promise<Violation[]> {
  const r = prng(seed);
  const w = target.world;
  const violations: Violation[] = [];
  // The systematic sweep (about 950 requests) first, whole, then random probes up to `requested`.
  const sweep = options.sweep ? sweepProbes(r, w) : [];
  const total = Math.max(requested, sweep.length);
  let index = 0;
  for (let start = 0; start < total; start += BATCH) {
    const probes = Array.from({ length: Math.min(BATCH, total - start) }, (_, i) => sweep[start + i] ?? generate(r, w));
    const before = await target.snapshot();
    const first = index;
    await pool(
      probes.map((probe, i) => async () => {
        try {
          const answer = await rawRequest(target.url, probe);
          const problem = problemWith(probe, answer, target.logs);
          if (problem) violations.push({ kind: problem.kind, detail: `${describeProbe(first + i, probe)}\n      -> ${problem.detail}` });
        } catch (error) {
          const message = (error as Error).message;
          // An oversize body is refused by answering 413 and closing before reading it all: a
          // client still writing it may see the connection close first (EPIPE, ECONNRESET), as
          // curl would. That is a refusal; the server's staying up is checked after each batch.
          if (probe.label.startsWith("oversize ") && /EPIPE|ECONNRESET/.test(message)) return;
          violations.push({ kind: `no answer (${message.replace(/\d+/g, "N")}) to ${probe.label.split(" ")[0]} requests`, detail: `${describeProbe(first + i, probe)}\n      -> ${message}` });
        }
      }),
      CONCURRENCY,
    );
    index += probes.length;
    const batch = `requests #${first}-#${index - 1}`;
    const gone = target.gone();
    if (gone) {
      violations.push({ kind: "the server process exited", detail: `during ${batch}: ${gone}` });
      return violations;
    }
    const health = await rawRequest(target.url, { method: "GET", path: "/healthz" }).catch((e: Error) => ({ status: 0, text: e.message, json: undefined }) as RawAnswer);
    if (health.status !== 200 || health.json?.ok !== true) violations.push({ kind: "the health check failed after a batch", detail: `after ${batch}: /healthz answered ${health.status} ${health.text}` });
    const listed = await rawRequest(target.url, { method: "POST", path: `${ACTION_PREFIX}ListWorkers`, headers: json(w.admin), body: "{}" }).catch(
      (e: Error) => ({ status: 0, text: e.message, json: undefined }) as RawAnswer,
    );
    if (listed.status !== 200 || !listed.json?.workers?.some((x: { workerId: string }) => x.workerId === w.workerId)) {
      violations.push({ kind: "ListWorkers failed after a batch", detail: `after ${batch}: ListWorkers answered ${listed.status} ${listed.text.slice(0, 300)}` });
    }
    const changed = changedTables(before, await target.snapshot());
    if (changed.length > 0) violations.push({ kind: "refused requests changed the store", detail: `${batch} (each must write nothing) changed: ${changed.join(", ")}` });
  }
  return violations;
}

/** Violations grouped by kind: "kind (N times)". */
function kinds(violations: Violation[]): string[] {
  const counts = new Map<string, number>();
  for (const v of violations) counts.set(v.kind, (counts.get(v.kind) ?? 0) + 1);
  return [...counts].map(([kind, n]) => `${kind} (${n} time${n === 1 ? "" : "s"})`).sort();
}

function report(seed: number, violations: Violation[]): string {
  const byKind = new Map<string, Violation[]>();
  for (const v of violations) byKind.set(v.kind, [...(byKind.get(v.kind) ?? []), v]);
  const sections = [...byKind].map(([kind, list]) => `\n* ${kind}: ${list.length}\n${list.slice(0, 2).map((v) => `    ${v.detail}`).join("\n")}`);
  return `${violations.length} violation(s) of ${byKind.size} kind(s). Replay with WORKYARD_FUZZ_SEED=${seed}${sections.join("")}\n`;
}

function newSeed(): number {
  return seedFromEnv ? Number(seedFromEnv) : crypto.randomInt(1, 2 ** 31 - 1);
}

describe.each(DIALECTS)("fuzzing the HTTP API on %s", (dialect) => {
  let server: TestServer;
  let target: Target;

  beforeAll(async () => {
    server = await startTestServer({ dialect, logLevel: "error" });
    target = {
      url: server.url,
      world: await makeWorld(server.url, server.adminToken),
      snapshot: () => snapshotStore(server.server.store.db),
      logs: () => server.logs(),
      gone: () => undefined,
    };
  });
  afterAll(async () => server?.stop());

  it(`answers ${REQUESTS_PER_DIALECT} random and malformed requests with 4xx errors in the error shape, storing nothing`, async () => {
    const seed = newSeed();
    let violations: Violation[];
    try {
      violations = await fuzz(target, seed, REQUESTS_PER_DIALECT, { sweep: true });
    } catch (error) {
      throw new Error(`fuzz run failed (WORKYARD_FUZZ_SEED=${seed}): ${(error as Error).stack}`);
    }
    expect(kinds(violations), report(seed, violations)).toEqual([]);
    // The world's worker kept exactly its secrets.
    const pulled = await rawRequest(server.url, { method: "POST", path: `${ACTION_PREFIX}PullEnv`, headers: json(server.adminToken), body: JSON.stringify({ workerId: target.world.workerId }) });
    expect(pulled.json.env).toEqual([
      { key: "A", value: CANARY_A },
      { key: "B", value: CANARY_B },
    ]);
  });

  it("a NUL byte in any string is kept as sent or refused with a 4xx, never a 5xx", async () => {
    // Valid JSON strings: each engine must either store them exactly or refuse them cleanly.
    const w = target.world;
    const cases: [string, Record<string, unknown>][] = [
      ["CreateWorker", { name: "nul\u0000name" }],
      ["CreateToken", { name: "nul\u0000token" }],
      ["CreateWorkspace", { name: "nul\u0000space" }],
      ["GetWorker", { workerId: "\u0000" }],
      ["PullEnv", { workerId: `${w.workerId}\u0000` }],
      ["UpsertSecrets", { workerId: w.workerId, secrets: [{ key: "NUL_VALUE", value: "a\u0000b" }] }],
      ["DeleteSecret", { workerId: w.workerId, key: "A\u0000" }],
      ["RevokeToken", { tokenId: "\u0000" }],
      ["CliLoginRedeem", { sessionId: "\u0000" }],
      ["GetOauthStatus", { workerId: w.workerId, oauthCapabilityKey: "k\u0000" }],
      ["GetOauthFlow", { workerId: w.workerId, state: "\u0000" }],
      ["GetRunLogs", { workerId: w.workerId, runId: "\u0000" }],
    ];
    const problems: string[] = [];
    const check = (what: string, answer: RawAnswer, page = false) => {
      if (answer.status >= 500) problems.push(`${what} answered ${answer.status} (server log: ${loggedError(server.logs(), answer.json?.request_id) ?? "none"})`);
      else if (answer.status >= 300 && !page) {
        const shape = errorShapeProblem(answer);
        if (shape) problems.push(`${what} answered ${answer.status} not in the error shape: ${shape}`);
      }
    };
    for (const [action, body] of cases) {
      const answer = await rawRequest(server.url, { method: "POST", path: `${ACTION_PREFIX}${action}`, headers: json(server.adminToken), body: JSON.stringify(body) });
      check(`${action} ${JSON.stringify(body)}`, answer);
      // Stored as sent, if stored.
      if (action === "CreateWorker" && answer.status === 200) {
        const got = await rawRequest(server.url, { method: "POST", path: `${ACTION_PREFIX}GetWorker`, headers: json(server.adminToken), body: JSON.stringify({ workerId: answer.json.worker.workerId }) });
        if (got.json?.worker?.name !== "nul\u0000name") problems.push(`CreateWorker stored the name as ${JSON.stringify(got.json?.worker?.name)}`);
      }
      if (action === "UpsertSecrets" && answer.status === 200) {
        const pulled = await rawRequest(server.url, { method: "POST", path: `${ACTION_PREFIX}PullEnv`, headers: json(server.adminToken), body: JSON.stringify({ workerId: w.workerId }) });
        const value = pulled.json?.env?.find((e: { key: string }) => e.key === "NUL_VALUE")?.value;
        if (value !== "a\u0000b") problems.push(`UpsertSecrets stored the value as ${JSON.stringify(value)}`);
      }
    }
    check("GET /cli-login/%00", await rawRequest(server.url, { method: "GET", path: "/cli-login/%00" }), true);
    check("GET /workers/oauth/callback?state=%00", await rawRequest(server.url, { method: "GET", path: "/workers/oauth/callback?state=%00&code=x" }), true);
    expect(problems).toEqual([]);
    expect((await rawRequest(server.url, { method: "GET", path: "/healthz" })).status).toBe(200);
  });
});

describe("fuzzing a real ntn server process", () => {
  let proc: ServerProcess;
  let target: Target;
  let reader: Kysely<Database>;
  let exitedWith: string | undefined;

  beforeAll(async () => {
    proc = await startServerProcess({ args: ["--log-level", "error"] });
    void proc.exited.then((code) => (exitedWith = `exit code ${code}\n${proc.output().slice(-2000)}`));
    const adminToken = fs.readFileSync(path.join(proc.dataDir, "admin-token"), "utf8").trim();
    const { default: SQLite } = await import("better-sqlite3");
    reader = new Kysely<Database>({ dialect: new SqliteDialect({ database: new SQLite(path.join(proc.dataDir, "workyard.db"), { readonly: true }) }) });
    target = {
      url: proc.url,
      world: await makeWorld(proc.url, adminToken),
      snapshot: () => snapshotStore(reader),
      logs: () => proc.output(),
      gone: () => exitedWith,
    };
  });
  afterAll(async () => {
    await reader?.destroy();
    await proc?.kill("SIGTERM");
  });

  it(`survives ${PROCESS_REQUESTS} random and malformed requests: the process never exits and keeps serving`, async () => {
    const seed = newSeed();
    // Random probes only: the sweep ran against the in-process servers.
    const violations = await fuzz(target, seed, PROCESS_REQUESTS, { sweep: false });
    expect(kinds(violations), report(seed, violations)).toEqual([]);
    expect(exitedWith).toBeUndefined();
  });
});
