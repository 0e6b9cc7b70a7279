import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { writeFixturePackage } from "./fixture-worker.js";
import { tempDir } from "./tmp.js";

/** Ids are random UUIDs; times ISO 8601 with milliseconds, in UTC. */
export const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/;
export const ISO = /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z/;

/** Replaces ids and times by placeholders, so a transcript can be compared as text. */
export function normalise(text: string): string {
  return text.replace(new RegExp(UUID.source, "g"), "<ID>").replace(new RegExp(ISO.source, "g"), "<TIME>");
}

/** A worker project folder: src/index.ts and the fixture's package.json and lockfile. */
export function workerProject(prefix = "wy-project-"): { dir: string; cleanup(): void } {
  const project = tempDir(prefix);
  fs.mkdirSync(path.join(project.dir, "src"));
  fs.writeFileSync(path.join(project.dir, "src/index.ts"), 'import { Worker } from "@notionhq/workers";\nexport default new Worker();\n');
  writeFixturePackage(project.dir);
  return project;
}

/**
 * A table as the official ntn prints it (FINDINGS 3.1): upper-case header, columns two spaces
 * apart, every column but the last padded to its widest cell, the last never padded.
 */
export function renderTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]! + 2))).join("");
  return [headers, ...rows].map((cells) => `${line(cells)}\n`).join("");
}

/** `--plain`: no header, cells joined by tabs. */
export function renderPlain(rows: string[][]): string {
  return rows.map((cells) => `${cells.join("\t")}\n`).join("");
}

/** A 127.0.0.1 port nothing listens on (bound, then released). */
export async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Permission bits of a file. */
export function modeOf(file: string): number {
  return fs.statSync(file).mode & 0o777;
}

/** The mode a new file gets here (0666 less this process's umask, which spawned CLIs inherit). */
export function newFileMode(): number {
  const probe = tempDir("wy-umask-");
  try {
    const file = path.join(probe.dir, "probe");
    fs.writeFileSync(file, "");
    return modeOf(file);
  } finally {
    probe.cleanup();
  }
}

/** The environment without any NOTION_* variable: only the stored login can tell the CLI where to go. */
export function withoutNotionVars(env: Record<string, string | undefined>): Record<string, string | undefined> {
  return Object.fromEntries(Object.entries(env).filter(([key]) => !key.startsWith("NOTION_")));
}
