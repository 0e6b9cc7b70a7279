import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["packages/*/src/**/*.test.ts", "test/**/*.test.ts"],
    // The fixture worker installed and npm's cache warm, once: tests never ask the registry.
    globalSetup: ["test/global-setup.ts"],
    // Subprocess-heavy end-to-end tests: forks, not threads, and generous timeouts (no timing asserts).
    pool: "forks",
    testTimeout: 120_000,
    hookTimeout: 180_000,
    maxWorkers: 2,
    minWorkers: 1,
    reporters: ["default"],
  },
});
