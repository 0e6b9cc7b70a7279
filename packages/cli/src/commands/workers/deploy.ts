import fs from "node:fs";
import path from "node:path";
import type { CapabilityView } from "@workyard/server/contract";
import { packSource } from "../../archive.js";
import { defineCommand } from "../../define-command.js";
import { UserError } from "../../errors.js";
import { capabilityDiff, createWorker } from "../../worker-project.js";

const BUILD_FAILED_HINT = "The build log above has the reason; fix it and run `ntn workers deploy` again. The previous version stays live.";

export default defineCommand({
  summary: "Deploy a worker (create or update)",
  options: [{ flags: "--name <NAME>", description: "Name of the worker (required when creating, forbidden when updating)" }],
  async run(ctx) {
    const existing = ctx.workersJson();
    if (existing && ctx.opts.name) {
      throw new UserError(
        "Cannot use --name when updating an existing worker. Remove --name to update, or delete workers.json to create a new worker.",
      );
    }
    if (!fs.existsSync(path.join(ctx.cwd, "src", "index.ts"))) {
      throw new UserError(`Could not find ${path.join(ctx.cwd, "src", "index.ts")}`, {
        hint: "Run deploy from a worker project folder (`ntn workers new` makes one).",
      });
    }
    const api = ctx.api();
    let workerId: string;
    let before: CapabilityView[] = [];
    let ticket: { url: string; fields: Record<string, string> };
    if (existing) {
      workerId = existing.workerId;
      before = (await api.call("ListCapabilities", { workerId })).capabilities;
      ticket = await api.call("UpdateWorker", { workerId, uploadType: "source" });
    } else {
      const created = await createWorker(ctx, ctx.opts.name as string | undefined);
      workerId = created.worker.workerId;
      ticket = created;
    }

    const { archive } = await packSource(ctx.cwd);
    await upload(ticket, archive);

    let ok = false;
    for await (const line of api.stream("BuildWorker", { workerId, stream: true })) {
      if (line._tag === "log") {
        ctx.out.status(`${line.event.stream === "stderr" ? "[build:err]" : "[build]"} ${line.event.data}`);
      } else if (line._tag === "error") {
        ctx.out.status(`[build:error] ${line.error}`);
      } else if (line._tag === "result" && (line.result as { ok?: unknown } | null)?.ok === true) {
        ok = true;
      }
    }
    if (!ok) throw new UserError("Worker build failed.", { hint: BUILD_FAILED_HINT });

    const after = (await api.call("FetchAndSaveCapabilities", { workerId })).capabilities;
    ctx.out.success(existing ? "Worker updated" : "Worker created");
    if (before.length + after.length > 0) {
      ctx.out.status("\n  Capabilities:");
      for (const line of capabilityDiff(before, after)) ctx.out.status(line);
    }
    if (!existing && after.length > 0) {
      ctx.out.status("\n  Run a capability with `ntn workers exec <key>`; OAuth capabilities connect with `ntn workers oauth start <key>`.");
    }
  },
});

/** The multipart upload the official CLI sends: the issued fields as text parts, then `file`. */
async function upload(ticket: { url: string; fields: Record<string, string> }, archive: Buffer): Promise<void> {
  const form = new FormData();
  for (const [key, value] of Object.entries(ticket.fields)) form.append(key, value);
  form.append("file", new Blob([archive], { type: "application/gzip" }), "archive.tar.gz");
  let response: Response;
  try {
    response = await fetch(ticket.url, { method: "POST", body: form });
  } catch (error) {
    throw new UserError("Failed to upload source archive", { cause: error });
  }
  if (!response.ok) {
    const body = (await response.text().catch(() => "")) || "";
    let message = `Failed to upload source archive: ${response.status} ${response.statusText}`;
    let hint: string | undefined;
    try {
      const parsed = JSON.parse(body) as { message?: string; hint?: string };
      if (parsed.message) message = `Failed to upload source archive: ${parsed.message}`;
      hint = parsed.hint;
    } catch {
      if (body) message += ` ${body.slice(0, 200)}`;
    }
    throw new UserError(message, { hint });
  }
}
