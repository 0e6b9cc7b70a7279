/**
 * Issue 13, fix 10: `ntn server`'s first line is its banner, not a JSON log line; a build says
 * once, not every time, that the SDK's Node 22 declaration is fine on Node 20.
 */
import { expect, it } from "vitest";
import { startServerProcess } from "../helpers/server-process.js";

it("`ntn server` starts with its banner: no JSON log line before `Listening on`", async () => {
  const server = await startServerProcess({});
  try {
    const lines = server.output().split("\n").filter(Boolean);
    expect(lines[0]).toMatch(/^Workyard \d+\.\d+\.\d+: data in /);
    const listening = lines.findIndex((line) => line.startsWith("Listening on "));
    expect(lines.slice(0, listening).filter((line) => line.startsWith("{"))).toEqual([]);
  } finally {
    await server.kill();
  }
});
