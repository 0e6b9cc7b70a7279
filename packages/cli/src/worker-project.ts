import path from "node:path";
import readline from "node:readline";
import type { CapabilityView } from "@workyard/server/contract";
import { writeWorkersJson } from "./config.js";
import type { CommandContext } from "./define-command.js";
import { LocalError, UserError } from "./errors.js";

/** A name for a new worker: --name, or a prompt on a terminal defaulting to the folder's name. */
export async function workerName(ctx: CommandContext, given: string | undefined): Promise<string> {
  if (given) return given;
  if (!ctx.interactive()) {
    throw new LocalError("Prompt failed", { hint: "A new worker needs a name: pass --name <name>." });
  }
  const fallback = path.basename(ctx.cwd);
  const rl = readline.createInterface({ input: ctx.stdin, output: ctx.out.stderr as NodeJS.WritableStream });
  try {
    const answer = await new Promise<string>((resolve) => rl.question(`? Worker name (${fallback}) › `, resolve));
    return answer.trim() || fallback;
  } finally {
    rl.close();
  }
}

/** CreateWorker, then workers.json at once (it stays even if a later step fails, as with the official CLI). */
export async function createWorker(ctx: CommandContext, givenName: string | undefined) {
  const existing = ctx.workersJson();
  if (existing) {
    throw new UserError(`This directory already has a worker (${existing.workerId}).`, {
      hint: "Delete workers.json to create a new worker, or run `ntn workers deploy` to update the existing one.",
    });
  }
  const name = await workerName(ctx, givenName);
  const created = await ctx.api().call("CreateWorker", { name, uploadType: "source" });
  writeWorkersJson(ctx.workersJsonFile(), {
    version: "1",
    environment: "prod",
    workspaceId: created.worker.spaceId,
    workerId: created.worker.workerId,
  });
  return created;
}

/** The `+`/`-` capability block deploy prints: union sorted by (tag, key), tags padded to one column. */
export function capabilityDiff(before: CapabilityView[], after: CapabilityView[]): string[] {
  const id = (c: CapabilityView) => `${c._tag}\0${c.key}`;
  const old = new Set(before.map(id));
  const now = new Set(after.map(id));
  const all = [...new Map([...before, ...after].map((c) => [id(c), c])).values()].sort((a, b) =>
    a._tag === b._tag ? (a.key < b.key ? -1 : a.key > b.key ? 1 : 0) : a._tag < b._tag ? -1 : 1,
  );
  const width = Math.max(0, ...all.map((c) => c._tag.length));
  return all.map((c) => {
    const marker = now.has(id(c)) && !old.has(id(c)) ? "+" : old.has(id(c)) && !now.has(id(c)) ? "-" : " ";
    return `    ${marker} ${c._tag.padEnd(width)}  ${c.key}`;
  });
}
