/**
 * Issue 12, findings C1-C3: a tenant holding only its own workspace's token tries to make the
 * build read the server's files and environment, and to escape through its dependencies. Each
 * test is the attack as the review ran it; after the fix each one fails.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliEnv, fixtureDeps, writeProject, type Deps } from "../build-run/fixtures.js";
import { ntn } from "../helpers/run-ntn.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { tempDir } from "../helpers/tmp.js";

const WORKER = (extra: string) => `import { Worker } from "@notionhq/workers";
import { j } from "@notionhq/workers/schema-builder";
${extra}
const worker = new Worker();
export default worker;
worker.tool("leak", { title: "leak", description: "returns what it got", schema: j.object({}), execute: async () => String(leaked) });
`;

const CANARY_NAME = "WORKYARD_TEST_BUILD_CANARY";
const CANARY = `server-env-${crypto.randomBytes(6).toString("hex")}`;

describe("builds cannot reach the server's files, environment or network (C1, C2, C3)", () => {
  let server: TestServer;
  let tmp: { dir: string; cleanup(): void };
  let deps: Deps;
  let env: Record<string, string | undefined>;
  let masterKey: string;
  let registryHits = 0;
  let registry: http.Server;
  let registryPort: number;

  /** Deploys a project; answers the CLI's result and everything the server stored about the build. */
  async function deploy(name: string, source: string, extra: Record<string, string> = {}, packageJson?: string, lockfile?: string) {
    const dir = writeProject(path.join(tmp.dir, name), { packageJson: packageJson ?? deps.packageJson, lockfile: lockfile ?? deps.lockfile }, source, extra);
    const result = await ntn(["workers", "deploy", "--name", name], { cwd: dir, env, timeoutMs: 180_000 });
    const rows = await server.server.store.db.selectFrom("deployments").select(["status", "build_log", "error"]).execute();
    const stored = JSON.stringify(rows);
    return { result, stored, everything: `${result.stdout}\n${result.stderr}\n${stored}\n${server.logs()}` };
  }

  beforeAll(async () => {
    process.env[CANARY_NAME] = CANARY;
    registry = http.createServer((_req, res) => {
      registryHits += 1;
      res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => registry.listen(0, "127.0.0.1", resolve));
    registryPort = (registry.address() as AddressInfo).port;
    server = await startTestServer();
    masterKey = fs.readFileSync(path.join(server.dataDir, "master.key"), "utf8").trim();
    tmp = tempDir("wy-build-attacks-");
    deps = fixtureDeps();
    env = cliEnv(server, path.join(tmp.dir, "home"));
  });
  afterAll(async () => {
    delete process.env[CANARY_NAME];
    await server?.stop();
    await new Promise((resolve) => registry?.close(resolve));
    tmp?.cleanup();
  });

  it("C1: importing the master key, the admin token or the CLI's login as text fails the build, and nothing of them is stored", async () => {
    const adminToken = path.join(server.dataDir, "admin-token");
    // Where `ntn server` logs the CLI on its machine in, with the admin token.
    const loginFile = path.join(tmp.dir, "home", ".config", "workyard", "auth.json");
    fs.mkdirSync(path.dirname(loginFile), { recursive: true });
    fs.writeFileSync(loginFile, JSON.stringify({ servers: { [server.url]: { token: server.adminToken } } }), { mode: 0o600 });
    for (const [name, file] of [
      ["steal-key", path.join(server.dataDir, "master.key")],
      ["steal-admin", adminToken],
      ["steal-login", loginFile],
      ["steal-passwd", "/etc/passwd"],
    ] as const) {
      const { result, everything } = await deploy(name, WORKER(`import leaked from ${JSON.stringify(file)} with { type: "text" };`));
      expect(result.code, result.stderr).toBe(5);
      expect(result.stderr).toMatch(/^\[build:error\] Bundling src\/index\.ts failed/m);
      expect(everything).not.toContain(masterKey);
      expect(everything).not.toContain(server.adminToken);
    }
    // A relative path that climbs out of the project fares no better.
    const { result } = await deploy("steal-relative", WORKER(`import leaked from "../../../../../../../../etc/hostname" with { type: "text" };`));
    expect(result.code).toBe(5);
    expect(result.stderr).toMatch(/Bundling src\/index\.ts failed/);
  });

  it("C1: an import that resolves outside the project is refused by name, even where the file exists in the sandbox", async () => {
    // /proc is mounted in every build sandbox: /proc/version exists there, and still may not be
    // bundled. (A small file: esbuild reads and embeds an input before the metafile check sees it.)
    const { result } = await deploy("steal-proc", WORKER(`import leaked from "/proc/version" with { type: "text" };`));
    expect(result.code).toBe(5);
    expect(result.stderr).toMatch(/resolves outside the project/);
  });

  it("C2: a project's .npmrc cannot expand the server's environment, name another registry, or reach a listener", async () => {
    process.env.WORKYARD_MASTER_KEY_FOR_TEST = masterKey;
    const npmrc = [
      `registry=http://127.0.0.1:${registryPort}/\${WORKYARD_MASTER_KEY_FOR_TEST}/\${${CANARY_NAME}}/`,
      `//127.0.0.1:${registryPort}/:_authToken=\${${CANARY_NAME}}`,
      "",
    ].join("\n");
    // A lockfile of its own (another name), so this build installs instead of reusing a tree.
    const lock = JSON.parse(deps.lockfile);
    lock.name = "npmrc-attack";
    lock.packages[""].name = "npmrc-attack";
    const pkg = JSON.parse(deps.packageJson);
    pkg.name = "npmrc-attack";
    try {
      const { result, everything } = await deploy("npmrc-attack", WORKER("const leaked = 1;"), { ".npmrc": npmrc }, `${JSON.stringify(pkg, null, 2)}\n`, `${JSON.stringify(lock, null, 2)}\n`);
      expect(result.code, result.stderr).toBe(0);
      expect(result.stderr).toMatch(/Ignored the project's \.npmrc/);
      // npm did run (a new lockfile), with the server's registry settings only.
      expect(result.stderr).toMatch(/^\[build\] npm ci /m);
      expect(everything).not.toContain(masterKey);
      expect(everything).not.toContain(CANARY);
      expect(registryHits).toBe(0);
    } finally {
      delete process.env.WORKYARD_MASTER_KEY_FOR_TEST;
    }
  });

  it("C3: file:, link:, git and URL dependencies are refused at deploy, naming the dependency", async () => {
    for (const [name, spec, why] of [
      ["rootfs", "file:/", /a path on the server/],
      ["linked", "link:../elsewhere", /a path on the server/],
      ["gitdep", "git+https://example.com/evil.git", /a git repository/],
      ["shorthand", "evil/repo", /GitHub shorthand/],
      ["tarball", "https://example.com/evil.tgz", /a URL/],
    ] as const) {
      const pkg = JSON.parse(deps.packageJson);
      pkg.dependencies[name] = spec;
      const { result } = await deploy(`dep-${name}`, WORKER("const leaked = 1;"), {}, `${JSON.stringify(pkg, null, 2)}\n`);
      expect(result.code, result.stderr).toBe(5);
      expect(result.stderr).toMatch(new RegExp(`the dependency "${name}"`));
      expect(result.stderr).toMatch(why);
      // Refused before npm ever ran.
      expect(result.stderr).not.toContain("npm ci");
    }
  });

  it("C3: a lockfile entry that links outside node_modules is refused too", async () => {
    const lock = JSON.parse(deps.lockfile);
    lock.packages["node_modules/rootfs"] = { resolved: "file:/", link: true };
    const { result } = await deploy("lock-link", WORKER("const leaked = 1;"), {}, undefined, `${JSON.stringify(lock, null, 2)}\n`);
    expect(result.code).toBe(5);
    expect(result.stderr).toMatch(/package-lock\.json: the dependency "rootfs"/);
  });
});

/** Packs a folder as a .tar.gz (whatever it holds, node_modules included, as a raw upload could). */
async function packFolder(dir: string): Promise<Buffer> {
  const tar = await import("tar");
  const chunks: Buffer[] = [];
  const stream = tar.create({ gzip: true, cwd: dir, portable: true }, fs.readdirSync(dir));
  for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

/** CreateWorker, the upload (fields, then file), BuildWorker: a deploy without our CLI's archive rules. */
async function rawDeploy(server: TestServer, token: string, name: string, archive: Buffer): Promise<{ workerId: string; build: string }> {
  const created = await server.call("CreateWorker", { name, uploadType: "source" }, token);
  expect(created.status, JSON.stringify(created.body)).toBe(200);
  const form = new FormData();
  for (const [key, value] of Object.entries(created.body.fields as Record<string, string>)) form.append(key, value);
  form.append("file", new Blob([archive], { type: "application/gzip" }), "archive.tar.gz");
  const uploaded = await fetch(created.body.url, { method: "POST", body: form });
  expect(uploaded.status, await uploaded.clone().text()).toBe(200);
  const response = await fetch(`${server.url}/api/v3/workersBuildWorker`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ workerId: created.body.worker.workerId, stream: true }),
  });
  return { workerId: created.body.worker.workerId, build: await response.text() };
}

describe("a shared dependency tree cannot be planted (security review, finding 2)", () => {
  let server: TestServer;
  let tmp: { dir: string; cleanup(): void };

  beforeAll(async () => {
    server = await startTestServer();
    tmp = tempDir("wy-plant-");
  });
  afterAll(async () => {
    await server?.stop();
    tmp?.cleanup();
  });

  it("an uploaded node_modules and npm-shrinkwrap.json are ignored; a tree without a lockfile is the workspace's own", async () => {
    const b = await server.call("CreateWorkspace", { name: "planter" });
    const packageJson = `${JSON.stringify({ name: "plant", version: "1.0.0", type: "module", dependencies: { "@notionhq/workers": "0.9.2", "@notionhq/client": "5.26.0" } }, null, 2)}\n`;
    const planter = path.join(tmp.dir, "planter");
    fs.mkdirSync(path.join(planter, "src"), { recursive: true });
    fs.writeFileSync(path.join(planter, "package.json"), packageJson);
    fs.writeFileSync(path.join(planter, "src", "index.ts"), WORKER("const leaked = 1;"));
    // What the review planted: a package's file, and a shrinkwrap naming another tarball.
    fs.mkdirSync(path.join(planter, "node_modules", "@notionhq", "client"), { recursive: true });
    fs.writeFileSync(path.join(planter, "node_modules", "@notionhq", "client", "PLANTED.js"), "globalThis.planted = true;\n");
    fs.writeFileSync(path.join(planter, "npm-shrinkwrap.json"), JSON.stringify({ name: "plant", lockfileVersion: 3, packages: {} }));
    const planted = await rawDeploy(server, b.body.token, "planter", await packFolder(planter));
    expect(planted.build).toContain("Ignored the project's node_modules");
    expect(planted.build).toContain("Ignored the project's npm-shrinkwrap.json");
    expect(planted.build).toMatch(/"_tag":"result"/);
    const trees = fs.readdirSync(path.join(server.dataDir, "deps")).filter((d) => /^[0-9a-f]{32}$/.test(d));
    for (const tree of trees) expect(fs.existsSync(path.join(server.dataDir, "deps", tree, "node_modules", "@notionhq", "client", "PLANTED.js"))).toBe(false);

    // The same package.json, no lockfile, in the default workspace: a tree of its own, installed anew.
    const victim = path.join(tmp.dir, "victim");
    fs.mkdirSync(path.join(victim, "src"), { recursive: true });
    fs.writeFileSync(path.join(victim, "package.json"), packageJson);
    fs.writeFileSync(path.join(victim, "src", "index.ts"), WORKER("const leaked = 1;"));
    const own = await rawDeploy(server, server.adminToken, "victim", await packFolder(victim));
    expect(own.build).not.toContain("Dependencies unchanged: reusing tree");
    expect(own.build).toMatch(/"_tag":"result"/);
  });
});
