// Starts the archive reader from its TypeScript source, for a server running from src (vitest,
// tsx): a worker thread does not inherit the parent's TypeScript loader. Compiled and bundled
// servers start dist/builder/archive-worker.js instead (see archive.ts); tsx is a dev dependency.
import { tsImport } from "tsx/esm/api";

await tsImport("./archive-worker.ts", import.meta.url);
