import fs from "node:fs";
import path from "node:path";
import type { Message } from "esbuild";
import { AppError } from "../errors.js";

export interface Bundle {
  code: string;
  sourceMap: string;
}

/**
 * `src/index.ts` to one ESM file with esbuild: packages stay external (the SDK must load from
 * node_modules), with a source map whose sources read `/src/...`, so a worker's stack traces
 * point at its own files and lines without showing where the server built them.
 */
export async function bundleWorker(projectDir: string, onLog: (line: string) => void): Promise<Bundle> {
  const entry = path.join(projectDir, "src", "index.ts");
  if (!fs.existsSync(entry)) {
    throw new AppError("build_failed", "The project has no src/index.ts.", {
      hint: "A worker's entry is src/index.ts, exporting `new Worker()` as default.",
    });
  }
  // esbuild loads on the first build, not when the server starts.
  const { build } = await import("esbuild");
  let result;
  try {
    result = await build({
      entryPoints: [entry],
      absWorkingDir: projectDir,
      outfile: path.join(projectDir, "index.mjs"),
      bundle: true,
      format: "esm",
      platform: "node",
      target: "node20",
      packages: "external",
      sourcemap: "linked",
      sourcesContent: true,
      write: false,
      logLevel: "silent",
    });
  } catch (error) {
    const messages = (error as { errors?: Message[] }).errors ?? [];
    for (const line of await formatLines(messages, "error")) onLog(line);
    throw new AppError("build_failed", `Bundling src/index.ts failed: ${messages[0]?.text ?? (error as Error).message}`, {
      hint: "Fix the error shown in the build log and deploy again.",
    });
  }
  for (const line of await formatLines(result.warnings, "warning")) onLog(line);
  const js = result.outputFiles.find((f) => f.path.endsWith(".mjs"));
  const map = result.outputFiles.find((f) => f.path.endsWith(".map"));
  if (!js || !map) throw new Error("esbuild produced no bundle");
  const parsed = JSON.parse(map.text) as { sources: string[] };
  parsed.sources = parsed.sources.map((source) => `/${path.relative(projectDir, path.resolve(projectDir, source)).split(path.sep).join("/")}`);
  return { code: js.text, sourceMap: JSON.stringify(parsed) };
}

async function formatLines(messages: Message[], kind: "error" | "warning"): Promise<string[]> {
  if (messages.length === 0) return [];
  const { formatMessages } = await import("esbuild");
  const formatted = await formatMessages(messages, { kind, color: false });
  return formatted.flatMap((text) => text.split("\n")).filter((line) => line.trim());
}
