import { describe, expect, it } from "@effect/vitest"
import { readdirSync, readFileSync } from "node:fs"

// The README's examples are the files in examples/ (type-checked by `npm run typecheck`, the *.test.ts
// run by `npm test`, the servers run by test/program/examples.test.ts): this keeps the two from drifting apart.
const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8")
const blocks = [...readme.matchAll(/<!-- example: (\S+) -->\n```ts\n([\s\S]*?)```/g)]
const examples = readdirSync(new URL("../examples/", import.meta.url)).filter((f) => f.endsWith(".ts")).sort()

describe("README", () => {
  it("shows every file of examples/, each once, the chat and its server first", () => {
    const shown = blocks.map((b) => b[1]!)
    expect(shown.slice(0, 2)).toEqual(["examples/chat.ts", "examples/server.ts"])
    expect([...shown].sort()).toEqual(examples.map((f) => `examples/${f}`))
  })
  it.each(blocks.map((b) => [b[1]!, b[2]!] as const))("%s is shown verbatim", (file, shown) => {
    expect(shown).toBe(readFileSync(new URL(`../${file}`, import.meta.url), "utf8"))
  })
})
