import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["packages/*/src/**/*.test.ts", "test/**/*.test.ts"],
    // The fixture worker installed and npm's cache warm, once: tests never ask the registry.
    globalSetup: ["test/global-setup.ts"],
    // Subprocess-heavy end-to-end tests: forks, not threads, and generous timeouts (no timing asserts).
    pool: "forks",
    // One fork runs many files, keeping the modules it loaded: a fresh fork per file spent 5-10 s
    // starting and importing the server, fastify and oidc-provider again, 70 times over.
    isolate: false,
    testTimeout: 120_000,
    hookTimeout: 180_000,
    // Four forks on two cores: much of a test is waiting on servers, builds and browsers (with
    // four, the machine's CPU is ~90 % busy through the run; a fifth added nothing). As many
    // minimum as maximum: a fork shrunk away mid-run after others ran files in it (isolate: false)
    // ends the run with tinypool's "Terminating worker thread".
    maxWorkers: 4,
    minWorkers: 4,
    reporters: ["default"],
  },
});
