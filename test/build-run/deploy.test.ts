import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ntn, type NtnResult } from "../helpers/run-ntn.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { tempDir } from "../helpers/tmp.js";
import { cliEnv, lineOf, fixtureDeps, sh, workerIdOf, writeProject, type Deps } from "./fixtures.js";

const header = `import { Worker } from "@notionhq/workers";
import { j } from "@notionhq/workers/schema-builder";

const worker = new Worker();
export default worker;
`;
const tool = (key: string, value: string) => `
worker.tool("${key}", {
  title: "${key}",
  description: "returns ${value}",
  schema: j.object({}),
  execute: async () => ({ value: "${value}" }),
});
`;

/** v1: keep + old. v2: keep + added (old removed). */
const V1 = header + tool("keep", "v1") + tool("old", "v1");
const V2 = header + tool("keep", "v2") + tool("added", "v2");

let server: TestServer;
let tmp: { dir: string; cleanup(): void };
let env: Record<string, string | undefined>;
let deps: Deps;

beforeAll(async () => {
  // Its first build installs: this file tests the install (no fixture tree in place).
  server = await startTestServer({ installedFixture: false });
  tmp = tempDir("wy-deploy-");
  env = cliEnv(server, path.join(tmp.dir, "home"));
  deps = fixtureDeps();
});
afterAll(async () => {
  await server?.stop();
  tmp?.cleanup();
});

describe("ntn workers new", () => {
  let root: string;
  beforeAll(() => {
    root = path.join(tmp.dir, "scaffold");
    fs.mkdirSync(root, { recursive: true });
  });

  it("writes a project like the official template, installs it, type-checks, and deploys as it is", async () => {
    const made = await ntn(["workers", "new", "my-worker"], { cwd: root, env });
    expect(made.code, made.stderr).toBe(0);
    expect(made.stdout).toBe("");
    expect(made.stderr).toContain("✔ Created worker project in my-worker");
    expect(made.stderr).toContain("✔ Installed dependencies");

    const dir = path.join(root, "my-worker");
    const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"));
    expect(pkg).toMatchObject({ type: "module", scripts: { build: "tsc", check: "tsc --noEmit" } });
    expect(Object.keys(pkg.dependencies)).toEqual(expect.arrayContaining(["@notionhq/workers", "@notionhq/client"]));
    expect(Object.keys(pkg.devDependencies)).toEqual(expect.arrayContaining(["typescript", "@types/node", "tsx"]));
    const tsconfig = JSON.parse(fs.readFileSync(path.join(dir, "tsconfig.json"), "utf8"));
    expect(tsconfig.compilerOptions).toMatchObject({ module: "nodenext", rootDir: "src", outDir: "dist", strict: true, skipLibCheck: true });
    expect(fs.readFileSync(path.join(dir, ".gitignore"), "utf8").split("\n").filter(Boolean)).toEqual([
      ".env",
      ".env.*",
      "dist/",
      "node_modules/",
      ".dev-shell/",
      "workers.*.json",
      "workers.json",
    ]);
    const source = fs.readFileSync(path.join(dir, "src", "index.ts"), "utf8");
    expect(source).toContain("export default worker");
    expect(fs.existsSync(path.join(dir, "package-lock.json"))).toBe(true);
    expect(fs.existsSync(path.join(dir, "node_modules", "@notionhq", "workers", "package.json"))).toBe(true);

    const tsc = await sh("npx", ["tsc", "--noEmit"], { cwd: dir, env });
    expect(tsc.code, tsc.stdout + tsc.stderr).toBe(0);

    const deployed = await ntn(["workers", "deploy", "--name", "my-worker"], { cwd: dir, env });
    expect(deployed.code, deployed.stderr).toBe(0);
    expect(deployed.stdout).toBe("");
    expect(deployed.stderr).toContain("✔ Worker created");
    expect(deployed.stderr).toMatch(/^ {4}\+ tool {2}sayHello$/m);
    const ran = await ntn(["workers", "exec", "sayHello", "-d", '{"name":"World"}'], { cwd: dir, env });
    expect(ran).toEqual({ code: 0, stdout: '{\n  "message": "Hello, World!"\n}\n', stderr: "" });
  });

  it("--no-install writes the files and installs nothing", async () => {
    const made = await ntn(["workers", "new", "bare", "--no-install", "--no-git"], { cwd: root, env });
    expect(made.code, made.stderr).toBe(0);
    const dir = path.join(root, "bare");
    expect(fs.existsSync(path.join(dir, "src", "index.ts"))).toBe(true);
    expect(fs.existsSync(path.join(dir, "node_modules"))).toBe(false);
    expect(fs.existsSync(path.join(dir, ".git"))).toBe(false);
  });

  it("refuses to overwrite conflicting files without --force, and overwrites them with it", async () => {
    const dir = path.join(root, "busy");
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, "package.json"), '{"name":"mine"}\n');
    fs.writeFileSync(path.join(dir, "notes.txt"), "keep me\n");

    const refused = await ntn(["workers", "new", "--no-install", "--no-git"], { cwd: dir, env });
    expect(refused.code).toBe(5);
    expect(refused.stderr).toMatch(/^error: .*package\.json/m);
    expect(refused.stderr).toContain("--force");
    expect(fs.readFileSync(path.join(dir, "package.json"), "utf8")).toBe('{"name":"mine"}\n');
    expect(fs.existsSync(path.join(dir, "src", "index.ts"))).toBe(false);

    const forced = await ntn(["workers", "new", "--force", "--no-install", "--no-git"], { cwd: dir, env });
    expect(forced.code, forced.stderr).toBe(0);
    expect(JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")).dependencies).toHaveProperty("@notionhq/workers");
    expect(fs.existsSync(path.join(dir, "src", "index.ts"))).toBe(true);
    expect(fs.readFileSync(path.join(dir, "notes.txt"), "utf8")).toBe("keep me\n");
  });
});

describe("ntn workers deploy from source", () => {
  let project: string;
  const run = (argv: string[]) => ntn(argv, { cwd: project, env });
  const capabilities = async () => {
    const listed = await run(["workers", "capabilities", "list", "--json"]);
    expect(listed.code, listed.stderr).toBe(0);
    return (JSON.parse(listed.stdout) as { _tag: string; key: string }[]).map((c) => `${c._tag} ${c.key}`).sort();
  };
  /** Replaces src/index.ts (and package.json when given), deploys, and expects the build to fail. */
  const failingDeploy = async (source: string, packageJson?: string) => {
    fs.writeFileSync(path.join(project, "src", "index.ts"), source);
    if (packageJson !== undefined) {
      fs.writeFileSync(path.join(project, "package.json"), packageJson);
      fs.rmSync(path.join(project, "package-lock.json"), { force: true });
    }
    const result = await run(["workers", "deploy"]);
    expect(result.code).toBe(5);
    expect(result.stdout).toBe("");
    expect(result.stderr).toMatch(/^error: Worker build failed\.$/m);
    return result.stderr;
  };
  /** The previous version stays live: its tool still answers, the new source's capabilities are not listed. */
  const expectV2Live = async () => {
    const ran = await run(["workers", "exec", "keep"]);
    expect(ran).toMatchObject({ code: 0, stdout: '{\n  "value": "v2"\n}\n' });
    expect(await capabilities()).toEqual(["tool added", "tool keep"]);
  };

  /*
   * The worker's life in stages, each run once whichever test needs it first, so every test runs
   * alone (-t) or in any order: the first deploy (v1), the redeploy (v2), then failing deploys
   * that must leave v2 live.
   */
  let firstDeploy: Promise<NtnResult> | undefined;
  const deployedV1 = () =>
    (firstDeploy ??= (async () => {
      project = writeProject(path.join(tmp.dir, "source"), deps, V1);
      return run(["workers", "deploy", "--name", "source"]);
    })());
  let redeploy: Promise<NtnResult> | undefined;
  const deployedV2 = () =>
    (redeploy ??= (async () => {
      expect((await deployedV1()).code).toBe(0);
      fs.writeFileSync(path.join(project, "src", "index.ts"), V2);
      return run(["workers", "deploy"]);
    })());
  /** v2 live, and the project's files as v2 has them, before a deploy that must fail. */
  const v2Project = async () => {
    expect((await deployedV2()).code).toBe(0);
    fs.writeFileSync(path.join(project, "src", "index.ts"), V2);
    fs.writeFileSync(path.join(project, "package.json"), deps.packageJson);
    fs.writeFileSync(path.join(project, "package-lock.json"), deps.lockfile);
  };

  it("creates the worker: the build log streams as [build] lines on stderr, stdout stays empty", async () => {
    const result = await deployedV1();
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toBe("");
    expect(result.stderr).toMatch(/^\[build\] Unpacked the source: /m);
    expect(result.stderr).toMatch(/^\[build\] npm ci --ignore-scripts/m);
    expect(result.stderr).toMatch(/^\[build\] Bundling src\/index\.ts/m);
    expect(result.stderr).toMatch(/^\[build\] Deployment \S+ is live\.$/m);
    expect(result.stderr).toContain("✔ Worker created");
    // npm's EBADENGINE lines about the SDK's Node 22 declaration: one line instead, on the first build.
    expect(result.stderr).not.toContain("npm warn EBADENGINE");
    expect(result.stderr.match(/@notionhq\/workers asks for Node 22 and runs on this server's Node/g)).toHaveLength(1);
    expect(result.stderr).toMatch(/^ {4}\+ tool {2}keep$/m);
    expect(result.stderr).toMatch(/^ {4}\+ tool {2}old$/m);
    expect(fs.existsSync(path.join(project, "workers.json"))).toBe(true);
    // The first deployment holds v1's capabilities (later stages may have replaced it as the live one).
    const [first] = await server.server.store.db.selectFrom("deployments").select("capabilities").where("worker_id", "=", workerIdOf(project)).orderBy("created_at").limit(1).execute();
    expect((JSON.parse(first!.capabilities!) as { _tag: string; key: string }[]).map((c) => `${c._tag} ${c.key}`).sort()).toEqual(["tool keep", "tool old"]);
  });

  it("redeploys with an unchanged lockfile installing nothing, and shows the +/- capability diff", async () => {
    const result = await deployedV2();
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/^\[build\] Dependencies unchanged: reusing tree \w+\.$/m);
    expect(result.stderr).not.toContain("npm ci");
    expect(result.stderr).not.toContain("npm install");
    expect(result.stderr).toContain("✔ Worker updated");
    const block = result.stderr.slice(result.stderr.indexOf("Capabilities:"));
    expect(block.split("\n").filter((line) => line.startsWith("    "))).toEqual(["    + tool  added", "      tool  keep", "    - tool  old"]);
    // ListCapabilities answers from the live deployment.
    expect(await capabilities()).toEqual(["tool added", "tool keep"]);
    await expectV2Live();
  });

  it("a dependency that cannot be installed fails the deploy with npm's error and leaves the previous version live", async () => {
    await v2Project();
    const pkg = JSON.parse(deps.packageJson);
    // Not in the lockfile: npm ci refuses, without asking the registry.
    pkg.dependencies["workyard-missing-dep"] = "1.0.0";
    const log = await failingDeploy(V2 + tool("neverLive", "v3"), `${JSON.stringify(pkg, null, 2)}\n`);
    expect(log).toMatch(/^\[build:err\] npm error .*workyard-missing-dep/m);
    expect(log).toMatch(/^\[build:error\] Installing dependencies failed/m);
    fs.writeFileSync(path.join(project, "package.json"), deps.packageJson);
    fs.writeFileSync(path.join(project, "package-lock.json"), deps.lockfile);
    await expectV2Live();
  });

  it("a syntax error fails the bundle with esbuild's message and location", async () => {
    await v2Project();
    const broken = `${V2}${tool("neverLive", "v3")}\nconst broken = ;\n`;
    const log = await failingDeploy(broken);
    expect(log).toMatch(/^\[build:err\] .*Unexpected ";"/m);
    expect(log).toContain(`src/index.ts:${lineOf(broken, "const broken = ;")}:`);
    expect(log).toMatch(/^\[build:error\] Bundling src\/index\.ts failed/m);
    await expectV2Live();
  });

  it("a module that throws while loading fails with the worker's error and stack", async () => {
    await v2Project();
    const broken = `${V2}${tool("neverLive", "v3")}\nthrow new Error("module level kaboom");\n`;
    const log = await failingDeploy(broken);
    expect(log).toMatch(/^\[build:error\] The worker failed to load: module level kaboom$/m);
    expect(log).toContain(`/src/index.ts:${lineOf(broken, "module level kaboom")}:`);
    await expectV2Live();
  });

  it("a module without a default export fails, saying to export the Worker", async () => {
    await v2Project();
    const log = await failingDeploy((V2 + tool("neverLive", "v3")).replace("export default worker;", ""));
    expect(log).toMatch(/^\[build:error\] .*export default/m);
    await expectV2Live();
  });

  it("a project without src/index.ts is refused before anything is uploaded", async () => {
    const empty = path.join(tmp.dir, "no-entry");
    fs.mkdirSync(empty, { recursive: true });
    fs.writeFileSync(path.join(empty, "package.json"), deps.packageJson);
    const before = (await server.call("ListWorkers", {})).body.workers.length;
    const result = await ntn(["workers", "deploy", "--name", "no-entry"], { cwd: empty, env });
    expect(result.code).toBe(5);
    expect(result.stderr).toMatch(/^error: .*src\/index\.ts/m);
    expect(fs.existsSync(path.join(empty, "workers.json"))).toBe(false);
    expect((await server.call("ListWorkers", {})).body.workers.length).toBe(before);
  });

  it("stores every build with its log and outcome; the worker points at the last good one", async () => {
    await v2Project();
    const broken = `${V2}\nconst broken = ;\n`;
    await failingDeploy(broken);
    const workerId = workerIdOf(project);
    const db = server.server.store.db;
    const builds = await db
      .selectFrom("deployments")
      .select(["id", "status", "error", "build_log"])
      .where("worker_id", "=", workerId)
      .orderBy("created_at")
      .execute();
    // v1 and v2, then whatever failed deploys ran before this test, then this one.
    expect(builds.slice(0, 2).map((b) => b.status)).toEqual(["ready", "ready"]);
    expect(builds.slice(2).map((b) => b.status).every((status) => status === "failed")).toBe(true);
    const last = builds.at(-1)!;
    expect(last.error).toMatch(/Bundling src\/index\.ts failed/);
    expect(last.build_log).toContain('Unexpected ";"');
    for (const build of builds) expect(build.build_log).toMatch(/Unpacked the source/);
    const worker = await db.selectFrom("workers").select(["live_deployment_id"]).where("id", "=", workerId).executeTakeFirstOrThrow();
    expect(worker.live_deployment_id).toBe(builds[1]!.id);
  });

});
