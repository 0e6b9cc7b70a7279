/**
 * `ntn login URL` on a terminal: it shows a verification code and the approval page's URL, a person
 * approves there with an API token, and the CLI stores a token of its own. The terminal comes from
 * util-linux's `script`, which runs the CLI under a pseudo-terminal.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OUR_NTN } from "../helpers/paths.js";
import { baseEnv, ntnBinary } from "../helpers/run-ntn.js";
import { startTestServer, type TestServer } from "../helpers/start-server.js";
import { tempDir } from "../helpers/tmp.js";

describe("ntn login on a terminal", () => {
  let server: TestServer;
  let home: { dir: string; cleanup(): void };
  beforeAll(async () => {
    server = await startTestServer();
    home = tempDir("wy-login-tty-");
  });
  afterAll(async () => {
    await server?.stop();
    home?.cleanup();
  });

  it("approves through the page and stores a new token for the server", async () => {
    const env = { ...baseEnv(home.dir), BROWSER: "true" };
    const command = `${process.execPath} ${OUR_NTN} login ${server.url}`;
    const child = spawn("script", ["-qefc", command, "/dev/null"], { env, stdio: ["pipe", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (c: Buffer) => (output += c.toString("utf8")));
    child.stderr.on("data", (c: Buffer) => (output += c.toString("utf8")));
    const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));

    const pageUrl = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no approval URL:\n${output}`)), 30_000);
      child.stdout.on("data", () => {
        const match = /(http:\/\/127\.0\.0\.1:\d+\/cli-login\/[\w-]+)/.exec(output);
        if (match) {
          clearTimeout(timer);
          resolve(match[1]!);
        }
      });
    });
    const code = /verification code: ([A-Z]{4}-[A-Z]{4})/.exec(output)?.[1];
    expect(code).toBeTruthy();
    const page = await (await fetch(pageUrl)).text();
    expect(page).toContain(code!);
    const approved = await fetch(pageUrl, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ token: server.adminToken }),
    });
    expect(approved.status).toBe(200);

    expect(await exited).toBe(0);
    expect(output).toContain(`✔ Logged in to ${server.url}`);
    const stored = JSON.parse(fs.readFileSync(path.join(home.dir, ".config", "workyard", "auth.json"), "utf8"));
    expect(stored.current).toBe(server.url);
    expect(stored.servers[server.url].token).toMatch(/^wy_/);
    expect(stored.servers[server.url].token).not.toBe(server.adminToken);
    expect((fs.statSync(path.join(home.dir, ".config", "workyard", "auth.json")).mode & 0o777).toString(8)).toBe("600");

    // With only the stored login, commands reach the server as that token.
    const whoami = await ntnBinary(["whoami", "--json"], { cwd: home.dir, env: baseEnv(home.dir) });
    expect(whoami.code).toBe(0);
    expect(JSON.parse(whoami.stdout)).toMatchObject({ url: server.url, workspaceId: server.workspaceId });
  });
});
