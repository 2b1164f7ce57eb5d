/**
 * Bounded slice of the network fuzzer (the long run is `npm run fuzz`): a few
 * seconds of hostile loopback connections against the real server while a
 * well-behaved client echoes. A fixed seed (`FUZZ_SEED=random` for a fresh
 * one, printed; `FUZZ_SEED=<n>` replays it).
 */
import { describe, expect, it } from "@effect/vitest"
import { runNetworkFuzz } from "./network.ts"
import { fuzzSeed } from "./seed.ts"

const seed = fuzzSeed()
const seconds = Number(process.env["FUZZ_NETWORK_SECONDS"] ?? 5)

describe("fuzz: network", () => {
  it(`hostile connections get the right answer, the echo client loses nothing, fds return to baseline (seed ${seed})`, async () => {
    const report = await runNetworkFuzz({ seed, seconds, concurrency: 16, deflate: true, log: (line) => console.log(line) })
    console.log(`network fuzz (FUZZ_SEED=${seed} to replay): ${JSON.stringify(report)}`)
    expect(report.violations).toEqual([])
    // Not a vacuous run: connections were made and the echo client was served throughout.
    expect(report.connections).toBeGreaterThan(50)
    expect(report.echoes.received).toBeGreaterThan(10)
  }, 40_000)
})
