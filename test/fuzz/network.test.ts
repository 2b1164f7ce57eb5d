/**
 * Bounded slice of the network fuzzer (the long run is `npm run fuzz`): a few
 * seconds of hostile loopback connections against the real server while a
 * well-behaved client echoes. A fixed seed (`FUZZ_SEED=random` for a fresh
 * one, printed; `FUZZ_SEED=<n>` replays it).
 */
import { describe, expect, it } from "@effect/vitest"
import { runNetworkFuzz } from "./network.ts"

// A fixed seed by default, so `npm test` (and CI) gives the same verdict every run; `npm run fuzz`
// explores fresh seeds, and FUZZ_SEED=random (or a number) does here too.
const seed = process.env["FUZZ_SEED"] === undefined
  ? 20261127
  : process.env["FUZZ_SEED"] === "random"
  ? Date.now() ^ (Math.random() * 0x7fffffff)
  : Number(process.env["FUZZ_SEED"])
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
