import { describe, expect, it } from "@effect/vitest"
import { readFileSync } from "node:fs"

// The README's examples are the files in examples/ (type-checked by `npm run typecheck`, and
// examples/chat.test.ts is run by `npm test`): this keeps the two from drifting apart.
const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8")
const blocks = [...readme.matchAll(/<!-- example: (\S+) -->\n```ts\n([\s\S]*?)```/g)]

describe("README", () => {
  it("shows at least the three examples", () => {
    expect(blocks.map((b) => b[1])).toEqual(["examples/chat.ts", "examples/server.ts", "examples/chat.test.ts"])
  })
  it.each(blocks.map((b) => [b[1]!, b[2]!] as const))("%s is shown verbatim", (file, shown) => {
    expect(shown).toBe(readFileSync(new URL(`../${file}`, import.meta.url), "utf8"))
  })
})
