import { defineCommand } from "../../define-command.js";
import { asUserError, loadServer, pathOption, STORE_OPTIONS } from "./options.js";

export default defineCommand({
  summary: "Re-encrypt every secret and token under a new master key",
  description:
    "Re-encrypt every secret, token and manifest under a new master key while servers keep serving. " +
    "With <data dir>/master.key, a new key is generated and put first in the file; running servers pick " +
    "it up, and old keys are removed once nothing uses them. With WORKYARD_MASTER_KEY, put the new key " +
    "first in that list on every server, run this, then drop the old key.",
  options: [
    ...STORE_OPTIONS,
    { flags: "--keep-old-keys", description: "Leave the old keys in master.key after rotation" },
  ],
  async run(ctx) {
    const server = await loadServer();
    try {
      const report = await server.rotateMasterKey({
        dataDir: pathOption(ctx.opts, ctx.cwd, "dataDir"),
        env: ctx.env,
        keepOldKeys: Boolean(ctx.opts.keepOldKeys),
        onProgress: (line) => ctx.out.status(line),
      });
      const counts = Object.entries(report.resealed).map(([kind, n]) => `${n} ${kind}`).join(", ");
      ctx.out.success(`Re-encrypted ${counts} under key ${report.keyId}`);
      if (report.source === "env") {
        ctx.out.status("Now remove the old keys from WORKYARD_MASTER_KEY on every server.");
      } else if (report.removedKeyIds.length > 0) {
        ctx.out.status(`Removed old key${report.removedKeyIds.length > 1 ? "s" : ""} ${report.removedKeyIds.join(", ")} from ${report.keyFile}.`);
      }
    } catch (error) {
      throw asUserError(server, error);
    }
  },
});
