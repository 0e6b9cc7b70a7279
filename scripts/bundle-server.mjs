// Bundles the compiled server into one ESM file for `ntn server`: loading one file instead of the
// hundreds of modules of fastify, kysely and the rest takes a fraction of the time at every start.
// Native and binary packages stay external: better-sqlite3, pg (optional native bindings), esbuild.
import { build } from "esbuild";

await build({
  entryPoints: ["packages/server/dist/main.js"],
  outfile: "packages/server/dist/bundle/main.mjs",
  bundle: true,
  format: "esm",
  platform: "node",
  target: "node20",
  external: ["better-sqlite3", "pg", "esbuild"],
  // CommonJS dependencies inside an ES module bundle need a `require`.
  banner: { js: 'import { createRequire as __workyardRequire } from "node:module"; const require = __workyardRequire(import.meta.url);' },
  sourcemap: "linked",
  logLevel: "warning",
});
