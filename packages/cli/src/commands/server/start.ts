import fs from "node:fs";
import { readState, saveLogin } from "../../config.js";
import { defineCommand } from "../../define-command.js";
import { asUserError, loadServer, SERVER_OPTIONS, serverOptions } from "./options.js";

export default defineCommand({
  summary: "Start the Workyard server",
  description:
    "Start the Workyard server. Data lives in SQLite under the data directory, or in PostgreSQL when " +
    "DATABASE_URL is set. WORKYARD_MASTER_KEY (base64 of 32 bytes, comma separated, newest first) " +
    "overrides the generated <data dir>/master.key.",
  // No commander defaults: the server's config owns them (flag, then environment, then default),
  // so the variables named here apply whenever a flag is not given.
  options: SERVER_OPTIONS,
  async run(ctx) {
    const server = await loadServer();
    let running;
    try {
      running = await server.startServer({ ...serverOptions(ctx.opts, ctx.cwd), env: ctx.env });
    } catch (error) {
      throw asUserError(server, error);
    }
    const { bootstrap, publicUrl, config, store } = running;
    const out = ctx.out;
    out.data(`Workyard ${server.VERSION}: data in ${store.location}${store.dialect === "postgres" ? " (PostgreSQL)" : ""}`);
    if (bootstrap.created) {
      out.data(`Created workspace "${bootstrap.workspace.name}" and its admin token in ${bootstrap.adminTokenFile}.`);
    }
    // Log the CLI on this machine in, unless it already has a login for this server.
    if (bootstrap.adminTokenFile && !readState(ctx.env).servers[publicUrl]) {
      const token = fs.readFileSync(bootstrap.adminTokenFile, "utf8").trim();
      saveLogin(publicUrl, { token, workspaceId: bootstrap.workspace.id, workspaceName: bootstrap.workspace.name, tokenName: "admin" }, ctx.env);
      out.data(`Logged the ntn CLI on this machine in to ${publicUrl}.`);
    }
    if (bootstrap.adminTokenFile) {
      out.data("Point the official ntn CLI at this server with:");
      out.data(`  export NOTION_API_BASE_URL=${publicUrl}`);
      out.data(`  export NOTION_WORKSPACE_ID=${bootstrap.workspace.id}`);
      out.data(`  export NOTION_API_TOKEN="$(cat ${bootstrap.adminTokenFile})"`);
    }
    // What workers get and may reach, said at every start; a server that cannot isolate them says so loudly.
    if (running.security.isolated) out.data(running.security.isolation);
    else out.warn(running.security.isolation);
    for (const line of running.security.egress) out.data(line);
    if (config.allowInsecureOauth) {
      out.warn("--allow-insecure-oauth: OAuth endpoints over plain http are allowed beyond loopback; tokens may cross the network in clear.");
    }
    // Handlers first, then the line a supervisor waits for: a SIGTERM sent as soon as it reads
    // `Listening on` must find them (without one, Node dies of the signal, skipping the shutdown).
    const stopped = new Promise<void>((resolve) => {
      const shutdown = () => {
        process.off("SIGINT", shutdown);
        process.off("SIGTERM", shutdown);
        out.status("Shutting down...");
        running.stop().then(resolve, resolve);
      };
      process.on("SIGINT", shutdown);
      process.on("SIGTERM", shutdown);
    });
    out.data(`Listening on ${running.url}`);
    await stopped;
  },
});
