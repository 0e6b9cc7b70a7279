// Bundles the compiled server into one ESM file for `ntn server`: loading one file instead of the
// hundreds of modules of fastify, kysely and the rest takes a fraction of the time at every start.
// Native and binary packages stay external: better-sqlite3, pg (optional native bindings), esbuild.
//
// The CLI is bundled the same way (every `ntn` call loads one file, not ~100 modules): the
// server and the packages it loads on demand (esbuild, tar) stay external.
//
// The two sandbox entries are bundled too, each into one file: inside its namespaces a worker
// process or a build sees that file alone (plus esbuild, mounted beside the build's entry).
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

for (const [entry, outfile] of [
  ["packages/server/dist/executor/child.mjs", "packages/server/dist/sandbox/worker.mjs"],
  ["packages/server/dist/builder/build-entry.mjs", "packages/server/dist/sandbox/build.mjs"],
]) {
  await build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    format: "esm",
    platform: "node",
    target: "node20",
    // Mounted beside the entries instead: esbuild for builds, undici for a worker's first fetch.
    external: ["esbuild", "undici"],
    banner: { js: 'import { createRequire as __workyardRequire } from "node:module"; const require = __workyardRequire(import.meta.url);' },
    logLevel: "warning",
  });
}


await build({
  entryPoints: ["packages/cli/dist/bin.js"],
  outfile: "packages/cli/dist/bundle/ntn.mjs",
  bundle: true,
  format: "esm",
  platform: "node",
  target: "node20",
  external: ["@workyard/server", "esbuild", "tar"],
  banner: { js: 'import { createRequire as __workyardRequire } from "node:module"; const require = __workyardRequire(import.meta.url);' },
  sourcemap: "linked",
  logLevel: "warning",
});
