import { defineCommand } from "../../define-command.js";
import { asUserError, loadServer, pathOption, STORE_OPTIONS } from "./options.js";

export default defineCommand({
  summary: "Create another workspace and write its first API token to a file",
  args: [{ name: "NAME", description: "Name of the workspace", required: true }],
  options: [
    ...STORE_OPTIONS,
    { flags: "--token-file <FILE>", description: "Where to write the token (default: <data dir>/workspaces/<id>.token, mode 0600)" },
  ],
  async run(ctx) {
    const server = await loadServer();
    try {
      const created = await server.createWorkspaceOffline({
        dataDir: pathOption(ctx.opts, ctx.cwd, "dataDir"),
        env: ctx.env,
        name: ctx.args.NAME as string,
        tokenFile: pathOption(ctx.opts, ctx.cwd, "tokenFile"),
      });
      ctx.out.data(created.workspaceId);
      ctx.out.success(`Workspace "${created.name}" created; its token is in ${created.tokenFile}`);
      ctx.out.status(`Use it with: NOTION_WORKSPACE_ID=${created.workspaceId} NOTION_API_TOKEN="$(cat ${created.tokenFile})"`);
    } catch (error) {
      throw asUserError(server, error);
    }
  },
});
