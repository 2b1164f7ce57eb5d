import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"

// Inside the repository, `wsreactor` and `wsreactor/testing` (used by examples/) are the `.ts` sources, not
// the built `dist/` the package's `exports` point consumers at (tsc and node get the same through the
// `wsreactor-source` export condition).
const source = (path: string) => fileURLToPath(new URL(path, import.meta.url))

export default defineConfig({
  resolve: {
    alias: [
      { find: /^wsreactor$/, replacement: source("./src/index.ts") },
      { find: /^wsreactor\/testing$/, replacement: source("./src/testing.ts") }
    ]
  },
  test: {
    include: ["test/**/*.test.ts", "examples/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000
  }
})
