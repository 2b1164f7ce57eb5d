/**
 * Topics across two cluster workers: the IPC broker (through the primary)
 * against the Redis broker (a local redis-server), the measurement behind the
 * choice in `layers/Ipc.ts`. One worker publishes, the other has one
 * subscriber; the broker is the only thing between them (no sockets).
 *
 *   node bench/cross-worker.ts [--messages 50000] [--paced 1000]
 *
 * Prints, per broker: burst throughput (messages/s until the subscriber has
 * them all) and the latency of paced messages (one every 2 ms), p50 and p99.
 */
import { spawn } from "node:child_process"
import cluster from "node:cluster"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as References from "effect/References"
import * as Scope from "effect/Scope"
import * as IpcBroker from "../src/layers/Ipc.ts"
import * as RedisBroker from "../src/layers/Redis.ts"
import type { Connection } from "../src/services/Connection.ts"

const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? Number(process.argv[i + 1]) : fallback
}
const burst = arg("messages", 50_000)
const paced = arg("paced", 1_000)
const now = () => performance.timeOrigin + performance.now()

type Note = { readonly bench: string; readonly [key: string]: unknown }
const tell = (note: Note) => process.send!(note)

if (cluster.isPrimary) {
  const runOne = (mode: "ipc" | "redis", redisUrl: string) =>
    new Promise<void>((resolve) => {
      cluster.setupPrimary({ serialization: "advanced" })
      const relay = IpcBroker.makeRelay()
      const env = { BENCH_MODE: mode, BENCH_REDIS: redisUrl }
      const sub = cluster.fork({ ...env, BENCH_ROLE: "sub" })
      const pub = cluster.fork({ ...env, BENCH_ROLE: "pub" })
      relay.attach(sub)
      relay.attach(pub)
      sub.on("message", (note: Note) => {
        if (note.bench === "subscribed") pub.send({ bench: "go" })
        if (note.bench === "result") {
          console.log(`${mode.padEnd(5)} burst ${burst} msgs: ${Math.round(note["perSecond"] as number).toLocaleString("en")} msg/s; paced ${paced}: p50 ${(note["p50"] as number).toFixed(3)} ms, p99 ${(note["p99"] as number).toFixed(3)} ms`)
          sub.kill()
          pub.kill()
          resolve()
        }
      })
    })
  const port = 20_000 + Math.floor(Math.random() * 20_000)
  const redis = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" })
  await new Promise((resolve) => setTimeout(resolve, 300))
  await runOne("ipc", "")
  await runOne("redis", `redis://127.0.0.1:${port}`)
  redis.kill("SIGKILL")
  process.exit(0)
} else {
  const mode = process.env["BENCH_MODE"]
  const scope = await Effect.runPromise(Scope.make())
  const broker = await Effect.runPromise(
    (mode === "ipc" ? IpcBroker.make : RedisBroker.make({ url: process.env["BENCH_REDIS"]! })).pipe(
      Scope.provide(scope),
      Effect.provideService(References.MinimumLogLevel, "Error"),
      Effect.orDie
    )
  )
  while (broker.status?.().state !== "ready") await new Promise((resolve) => setTimeout(resolve, 10))
  if (process.env["BENCH_ROLE"] === "sub") {
    let received = 0
    let start = 0
    let burstDone = 0
    const latencies: Array<number> = []
    const decoder = new TextDecoder()
    const connection = {
      id: 1,
      offerFrame: (frame: Uint8Array) => {
        const text = decoder.decode(frame.subarray(2))
        received++
        if (text.startsWith("b")) {
          if (received === 1) start = Number(text.slice(2))
          if (received === burst) burstDone = now()
        } else {
          latencies.push(now() - Number(text.slice(2)))
          if (latencies.length === paced) {
            latencies.sort((a, b) => a - b)
            tell({
              bench: "result",
              perSecond: burst / ((burstDone - start) / 1000),
              p50: latencies[Math.floor(paced * 0.5)],
              p99: latencies[Math.floor(paced * 0.99)]
            })
          }
        }
        return true
      }
    } as unknown as Connection
    await Effect.runPromise(Scope.provide(broker.subscribe("bench", connection), scope))
    await new Promise((resolve) => setTimeout(resolve, 100))
    tell({ bench: "subscribed" })
  } else {
    process.on("message", async (note: Note) => {
      if (note.bench !== "go") return
      for (let i = 0; i < burst; i++) Effect.runSync(broker.publish("bench", `b ${now()}`))
      // Let the burst drain first, so paced messages measure the hop, not the queue.
      await new Promise((resolve) => setTimeout(resolve, 3000))
      for (let i = 0; i < paced; i++) {
        Effect.runSync(broker.publish("bench", `p ${now()}`))
        await new Promise((resolve) => setTimeout(resolve, 2))
      }
    })
  }
  process.on("SIGTERM", () => void Effect.runPromise(Scope.close(scope, Exit.void)).then(() => process.exit(0)))
}
