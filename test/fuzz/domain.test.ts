/**
 * Bounded slice of the property-based fuzzing of the sans-I/O core (the long
 * run is `npm run fuzz`): a few hundred inputs per property, with a fixed seed
 * (`FUZZ_SEED=random` for a fresh one, printed; `FUZZ_SEED=<n>` replays it), plus every saved
 * counterexample in test/fuzz/regressions/.
 */
import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import { properties, toProperty } from "./properties.ts"
import * as Regressions from "./Regressions.ts"
import { fuzzSeed } from "./seed.ts"

const seed = fuzzSeed()
const numRuns = Number(process.env["FUZZ_RUNS"] ?? 300)

describe("fuzz: sans-I/O core", () => {
  for (const property of properties) {
    // zlib work is slower: fewer inputs for the async (inflate) property.
    const runs = property.async === true ? Math.ceil(numRuns / 3) : numRuns
    it(`${property.name}: ${runs} random inputs (seed ${seed})`, async () => {
      console.log(`fuzz ${property.name}: seed ${seed} (FUZZ_SEED=${seed} to replay)`)
      await fc.assert(toProperty(property), { seed, numRuns: runs })
    })
  }
})

describe("fuzz: saved counterexamples", () => {
  const saved = Regressions.load()
  it("every file names a known property", () => {
    for (const { file, regression } of saved) {
      expect(properties.map((p) => p.name), file).toContain(regression.property)
    }
  })
  for (const { file, regression } of saved) {
    it(`replays ${file}`, async () => {
      const property = properties.find((p) => p.name === regression.property)!
      await property.check(regression.input)
    })
  }
})
