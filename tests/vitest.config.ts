import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    root: new URL("..", import.meta.url).pathname,
    include: ["tests/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Integration files each get their own database and Redis prefix, so files run in parallel;
    // two forks match the two cores the suite is sized for.
    pool: "forks",
    maxWorkers: 2,
  },
});
