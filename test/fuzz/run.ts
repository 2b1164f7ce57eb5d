/**
 * `npm run fuzz` (node test/fuzz/run.ts): the long fuzz run (the bounded slice is in `npm test`).
 *
 *   npm run fuzz -- [--seconds 60] [--runs 1000000] [--network-seconds 30] [--seed N] [--concurrency 24]
 *
 * 1. Property-based fuzzing of the handshake parser, the frame decoder and the
 *    protocol (test/fuzz/properties.ts) in batches with fresh seeds, until
 *    `--seconds` have passed or each property has seen `--runs` inputs. A
 *    failure is shrunk by fast-check and saved under test/fuzz/regressions/,
 *    which `npm test` replays from then on.
 * 2. The network fuzzer (test/fuzz/network.ts) against the live server for
 *    `--network-seconds`, half with permessage-deflate served, half without.
 *
 * Everything is seeded from one printed seed: `--seed N` repeats a run.
 * Exits 1 on any failure.
 */
import { parseArgs } from "node:util"
import fc from "fast-check"
import { runNetworkFuzz } from "./network.ts"
import { properties, toProperty } from "./properties.ts"
import * as Regressions from "./Regressions.ts"

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "60" },
    runs: { type: "string", default: "1000000" },
    "network-seconds": { type: "string", default: "30" },
    seed: { type: "string" },
    concurrency: { type: "string", default: "24" }
  }
})
const number = (name: string, value: string | undefined, min: number): number => {
  const n = Number(value)
  if (!Number.isFinite(n) || n < min) {
    console.error(`--${name} must be a number ≥ ${min}, got ${value}`)
    process.exit(2)
  }
  return n
}
const seconds = number("seconds", values.seconds, 0)
const runs = number("runs", values.runs, 1)
const networkSeconds = number("network-seconds", values["network-seconds"], 0)
const concurrency = number("concurrency", values.concurrency, 1)
const seed = values.seed === undefined ? (Date.now() ^ (Math.random() * 0x7fffffff)) | 0 : number("seed", values.seed, -(2 ** 31)) | 0

console.log(`fuzz: seed ${seed} (--seed ${seed} repeats this run); properties ${seconds} s / ${runs} runs each; network ${networkSeconds} s`)
let failed = false

// ---- 1. properties, in batches so the time budget is honoured and each batch has its own seed
const BATCH = 2000
const tried = new Map<string, number>(properties.map((p) => [p.name, 0]))
const broken = new Set<string>()
const stopAt = Date.now() + seconds * 1000
for (let batch = 0; Date.now() < stopAt; batch++) {
  let ran = false
  for (const property of properties) {
    const done = tried.get(property.name)!
    if (broken.has(property.name) || done >= runs || Date.now() >= stopAt) continue
    ran = true
    const batchSeed = (seed + batch * 7919) | 0
    const numRuns = Math.min(property.async === true ? BATCH / 10 : BATCH, runs - done)
    const details = await fc.check(toProperty(property), { seed: batchSeed, numRuns })
    tried.set(property.name, done + details.numRuns)
    if (details.failed && details.counterexample !== null) {
      broken.add(property.name)
      failed = true
      const error = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance)
      const file = Regressions.save({
        property: property.name,
        seed: batchSeed,
        path: details.counterexamplePath ?? undefined,
        error,
        input: details.counterexample[0]
      })
      console.log(`FAIL ${property.name} (seed ${batchSeed}, path ${details.counterexamplePath}): ${error}\n  shrunk input saved to ${file}`)
    }
  }
  if (!ran) break
}
for (const [name, n] of tried) console.log(`  ${name}: ${n} inputs${broken.has(name) ? " (FAILED)" : ""}`)
console.log(`  properties: ${[...tried.values()].reduce((a, b) => a + b, 0)} inputs tried`)

// ---- 2. the network fuzzer
if (networkSeconds > 0) {
  for (const deflate of [true, false]) {
    const report = await runNetworkFuzz({
      seed: (seed + (deflate ? 0 : 1_000_003)) | 0,
      seconds: networkSeconds / 2,
      concurrency,
      deflate,
      log: (line) => console.log(`  ${line}`)
    })
    console.log(`network (deflate ${deflate ? "on" : "off"}, seed ${report.seed}): ${report.connections} connections, ${report.bytesSent} bytes in ${report.durationMs} ms`)
    console.log(`  outcomes: ${Object.entries(report.outcomes).sort().map(([k, v]) => `${k}=${v}`).join(" ")}`)
    console.log(`  echo client: ${report.echoes.sent} sent, ${report.echoes.received} echoed`)
    console.log(`  fds ${report.fds.before} -> ${report.fds.after}, heap ${report.heapMiB.before} -> ${report.heapMiB.after} MiB, open connections after: ${report.openConnectionsAfter}`)
    for (const v of report.violations) console.log(`  VIOLATION ${v}`)
    if (report.violations.length > 0) failed = true
  }
}

console.log(failed ? "fuzz: FAILED" : "fuzz: ok")
process.exit(failed ? 1 : 0)
