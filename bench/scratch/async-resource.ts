/**
 * Scratch: what Effect 4.1's async-context capture costs per fiber suspension.
 * Effect creates `new AsyncResource("effect/Fiber")` whenever a fiber yields and,
 * when it resumes, runs it through `runInAsyncScope` then `emitDestroy` (see
 * node_modules/effect/dist/internal/effect.js, `captureAsyncContext`). A handler
 * waiting for its next message pays this once per message.
 *
 *   node bench/scratch/async-resource.ts [iterations]
 */
import { AsyncResource } from "node:async_hooks"

const N = Number(process.argv[2] ?? 5_000_000)
let sink = 0
const work = (x: number) => {
  sink += x
}

const time = (label: string, f: () => void) => {
  f() // warm up
  const t0 = process.hrtime.bigint()
  f()
  const ns = Number(process.hrtime.bigint() - t0) / N
  console.log(`${label.padEnd(48)} ${ns.toFixed(1)} ns per op`)
  return ns
}

const direct = time("direct call", () => {
  for (let i = 0; i < N; i++) work(i)
})
const captured = time("new AsyncResource + runInAsyncScope + emitDestroy", () => {
  for (let i = 0; i < N; i++) {
    const resource = new AsyncResource("effect/Fiber")
    try {
      resource.runInAsyncScope(work, undefined, i)
    } finally {
      resource.emitDestroy()
    }
  }
})
console.log(`capture and resume cost: ${(captured - direct).toFixed(1)} ns per suspension (sink ${sink > 0})`)
